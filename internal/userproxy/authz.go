package userproxy

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/regedge/regedge/internal/token"
)

// Reads and writes. The edge's upstream credential (proxy.upstreams[].auth)
// is the edge's own account at the registry: every read goes up with it, so
// that the upstream's answers are the same for every client (and cacheable
// for all of them); a write goes up with it only when the client's token
// carries ScopeRegistryWrite. A request that is not a read and whose token
// lacks the scope is refused here (403) and never reaches the upstream.

// auditPrefix is where npm's audit endpoints live: POSTs there only read
// (`npm audit` sends the lockfile, the registry answers advisories).
const auditPrefix = "/-/npm/v1/security/"

// isRead reports whether a request only reads: GET and HEAD, and a POST to
// npm's audit endpoints. The audit path must be plain (lowercase letters,
// digits, '/', '-', '_'): no dot segments or escapes that an upstream could
// resolve to another endpoint, which would turn a "read" into a write with
// the edge's credential.
func isRead(method, escapedPath string) bool {
	switch method {
	case http.MethodGet, http.MethodHead:
		return true
	case http.MethodPost:
		return isAuditPath(escapedPath)
	}
	return false
}

// isAuditPath: a plain path under /-/npm/v1/security/.
func isAuditPath(escapedPath string) bool {
	rest, ok := strings.CutPrefix(escapedPath, auditPrefix)
	if !ok || rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '/' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// missingScope is the 403 body of a write without ScopeRegistryWrite.
func missingScope() apiError {
	// Clients print "error" as it is (yarn: `Couldn't publish package:
	// "…: <error>"`), so it names the scope itself.
	return apiError{Error: "Forbidden: this request needs a token with scope " + token.ScopeRegistryWrite, Scope: token.ScopeRegistryWrite,
		Rule: "requests other than GET and HEAD need a token with scope " + token.ScopeRegistryWrite}
}

// scopeOf returns the "@scope" of a package path, lowercased, or "". The
// path is %-decoded first: /@scope%2fname, /@scope/name and
// /%40scope%2Fname are the same package to every registry, so they must be
// the same scope to the scope rule (the dependency-confusion guard).
func scopeOf(escapedPath string) string {
	p := escapedPath
	if strings.IndexByte(p, '%') >= 0 {
		if d, err := url.PathUnescape(escapedPath); err == nil {
			p = d
		} else if i := strings.IndexByte(p, '%'); i >= 0 {
			p = p[:i] // both front ends refuse bad escapes; never guess past one
		}
	}
	if !strings.HasPrefix(p, "/@") {
		return ""
	}
	p = p[1:]
	if i := strings.IndexByte(p, '/'); i > 1 {
		return strings.ToLower(p[:i])
	}
	return ""
}
