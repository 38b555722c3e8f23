package admin

import (
	"errors"
	"net"
	"net/http"
	"net/netip"

	"github.com/regedge/regedge/internal/token"
)

// Who may change an agent's config state over HTTP: the admin API and the
// WebSocket config server share this rule. A request that arrived on a
// loopback address may; any other needs an admin token.

// OnLoopbackListener reports whether r arrived on a listener bound to a
// loopback address: config writes there need no admin token.
func OnLoopbackListener(r *http.Request) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(la.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// TokenAuthorizer admits a request that carries (in X-Bun-Proxy-Token or
// Authorization: Bearer) a token v verifies with scope config:write. Its
// errors are *token.Error; a valid token of another scope is result "scope".
func TokenAuthorizer(v *token.Verifier) func(r *http.Request) error {
	return func(r *http.Request) error {
		c, err := v.Verify(token.FromRequest(r))
		if err != nil {
			return err
		}
		if !c.HasScope(token.ScopeConfigWrite) {
			return &token.Error{Result: "scope", Err: errors.New("not an admin token (scope config:write)")}
		}
		return nil
	}
}
