package userproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/token"
)

// inbound is what the checks read from a request, whichever front end
// parsed it: net/http's (ServeHTTP) or the plain-HTTP fast path (Server).
type inbound interface {
	// header returns the first value of a header (name in canonical
	// form, matched case-insensitively) and how many times it appears.
	header(name string) (first string, n int)
	// escapedPath is the request path as the client sent it.
	escapedPath() string
	requestMethod() string
	requestHost() string
	remoteAddr() (netip.AddrPort, bool)
	localAddr() (netip.AddrPort, bool)
	// conn is the per-connection memory: the registry hash the kernel
	// was last told for the connection's socket.
	conn() *connState
}

// connState is what the proxy keeps per client connection.
type connState struct {
	// sock is the connection's TCP socket (under TLS), which the kernel
	// accounts by registry hash; nil when there is none.
	sock    syscall.Conn
	tagMu   sync.Mutex // HTTP/2 streams share a connection
	tagged  bool
	tagHash uint32
	// tls is the connection's TLS state when the fast path terminated TLS
	// (net/http only sees it for connections it accepted itself).
	tls *tls.ConnectionState
}

// socketOf is the TCP socket under c: through the connection cap's and the
// fast path's replay wrappers and TLS; nil when c has no socket.
func socketOf(c net.Conn) syscall.Conn {
	for {
		switch x := c.(type) {
		case *handedConn:
			c = x.Conn
		case *cappedConn: // proxy.maxConnections
			c = x.Conn
		case *tls.Conn:
			c = x.NetConn()
		case syscall.Conn:
			return x
		default:
			return nil
		}
	}
}

type connStateKey struct{}

// ConnContext gives each connection of a net/http server its connState;
// set it as the proxy's http.Server.ConnContext. Without it the flow tag
// is read per request.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	cs := &connState{sock: socketOf(c)}
	if hc, ok := c.(*handedConn); ok {
		if tc, ok := hc.Conn.(*tls.Conn); ok {
			st := tc.ConnectionState()
			cs.tls = &st
		}
	}
	return context.WithValue(ctx, connStateKey{}, cs)
}

// verdict is the outcome of the checks of §4.2: a refusal (code != 0) or
// the state, registry hash and upstream to forward to.
type verdict struct {
	state       codec.State
	hash        uint32
	route       *route
	tokenResult string
	// writeAuth: a write whose token carries ScopeRegistryWrite; only such
	// a write is sent with the upstream's credential.
	writeAuth bool
	// client is who the per-client rate limit counts this request
	// against: the token's sub, else the source address.
	client string

	code       int // the refusal's status; 0 when admitted
	refusal    apiError
	retryAfter int // seconds; 0 for none
}

func refuse(code int, e apiError) verdict { return verdict{code: code, refusal: e} }

// admit runs the checks of §4.2 in order: config headers (400), version
// (503), token (401), rate limit (429), routing (502). Both front ends
// call it, so the order, statuses and bodies cannot drift apart. The
// kernel is told the request's registry hash before anything is answered.
func (p *Proxy) admit(in inbound) verdict {
	v := p.checks(in)
	p.tellKernel(in, v)
	return v
}

func (p *Proxy) checks(in inbound) verdict {
	if p.cfg.PublicURL == "" && !plainHost(in.requestHost()) {
		return refuse(http.StatusBadRequest, badHost())
	}
	own := p.states.State()
	st, err := codec.ExtractHeadersFunc(in.header, own)
	if err != nil {
		var he *codec.HeaderError
		if errors.As(err, &he) {
			return refuse(http.StatusBadRequest, apiError{Error: "Invalid config headers", Header: he.Header, Rule: he.Rule})
		}
		return refuse(http.StatusBadRequest, apiError{Error: err.Error()})
	}
	v := verdict{state: st, hash: st.RegistryHash}
	if !p.cfg.Versions.Has(st.Version) {
		v.code, v.refusal = http.StatusServiceUnavailable, apiError{Error: "Config version mismatch", Rule: fmt.Sprintf("accepted: %s", p.cfg.Versions)}
		return v
	}
	scoped := false
	if scope := scopeOf(in.escapedPath()); scope != "" {
		if h, ok := p.cfg.Scopes[scope]; ok {
			v.hash, scoped = h, true
		}
	}
	read := isRead(in.requestMethod(), in.escapedPath())
	if p.cfg.Tokens != nil {
		tok := tokenOf(in)
		if tok == "" && read && p.cfg.AnonymousRead {
			v.tokenResult = "anonymous" // tokens.anonymousRead: not a verification
		} else {
			var claims *cachedToken
			claims, v.tokenResult = p.checkToken(tok, v.hash)
			p.tokenChecks.WithLabelValues(v.tokenResult).Inc()
			if v.tokenResult != token.ResultOK && v.tokenResult != "cached" {
				p.tokenFailed(in, v.tokenResult)
				v.code, v.refusal = http.StatusUnauthorized, apiError{Error: "Invalid proxy token", Reason: v.tokenResult}
				return v
			}
			if !read {
				if !claims.claims.HasScope(token.ScopeRegistryWrite) {
					v.code, v.refusal = http.StatusForbidden, missingScope()
					return v
				}
				v.writeAuth = true
			}
			if sub := claims.claims.Subject; sub != "" {
				v.client = "sub:" + sub
			}
		}
	}
	if !p.limit(in, &v) {
		return v
	}
	v.route = p.routes[v.hash]
	if v.route == nil && !scoped { // a scope's hash never falls through: dependency-confusion guard
		v.route = p.fallback
	}
	if p.audit != nil && strings.HasPrefix(in.escapedPath(), auditPrefix) {
		v.route = p.audit // proxy.audit: one upstream answers every audit
	}
	if v.route == nil {
		v.code, v.refusal = http.StatusBadGateway, apiError{Error: "Unknown registry hash", Rule: fmt.Sprintf("no upstream for 0x%08x", v.hash)}
	}
	return v
}

// tokenOf is the client's proxy token (token.FromHeaders).
func tokenOf(in inbound) string {
	return token.FromHeaders(func(name string) string { v, _ := in.header(name); return v })
}

// tokenFailed counts a token failure of the request's source and blocks
// the source in XDP once it fails too often. A missing token is never
// counted (a misconfigured client, or a neighbour behind the same NAT, is
// not an attacker guessing tokens), nor are the sources in BlockExempt.
func (p *Proxy) tokenFailed(in inbound, result string) {
	if p.cfg.Blocker == nil || p.cfg.BlockAfter <= 0 || result == token.ResultMissing {
		return
	}
	src, ok := in.remoteAddr()
	if !ok {
		return
	}
	a := src.Addr().Unmap()
	if p.blockExempt(a) || !p.failures.add(a, p.cfg.BlockAfter, p.cfg.BlockWindow) {
		return
	}
	if err := p.cfg.Blocker.Block(netip.PrefixFrom(a, a.BitLen()), p.cfg.BlockTTL); err != nil {
		p.log.Warn("could not block a source", "source", a.String(), "err", err)
		return
	}
	p.log.Warn("source blocked in XDP after repeated token failures", "source", a.String(), "ttl", p.cfg.BlockTTL.String())
}

// tellKernel writes the request's registry hash (folded: see below) into the kernel's state of
// the connection's socket when it differs from the last one, so that TC
// counts the response (and the request) under it; a request whose hash is
// unknown (malformed config headers: 400) takes the hash away. A failure
// is counted (regedge_handoff_mismatch_total): that traffic is not counted
// per registry.
func (p *Proxy) tellKernel(in inbound, v verdict) {
	if p.cfg.Kernel == nil {
		return
	}
	cs := in.conn()
	if cs.sock == nil {
		return
	}
	known := v.code != http.StatusBadRequest
	// The hash comes from the client. The kernel's counters are a
	// bounded map that lives as long as its pin: one key per made-up hash
	// would fill it, and a configured registry counted later would find
	// no room. So the kernel is told the configured hashes alone, and one
	// stand-in for all others, which its metrics label "other".
	hash := v.hash
	if _, configured := p.labels[hash]; !configured {
		hash = p.otherHash
	}
	cs.tagMu.Lock()
	defer cs.tagMu.Unlock()
	if known == cs.tagged && (!known || cs.tagHash == hash) {
		return
	}
	var err error
	if known {
		err = p.cfg.Kernel.TagSocket(cs.sock, hash)
	} else {
		err = p.cfg.Kernel.UntagSocket(cs.sock)
	}
	if err != nil {
		p.mismatch.Inc()
		cs.tagged = false
		return
	}
	cs.tagged, cs.tagHash = known, hash
}

// stdRequest is a net/http request seen as an inbound.
type stdRequest struct{ r *http.Request }

func (s stdRequest) header(name string) (string, int) {
	if vs := s.r.Header[name]; len(vs) > 0 {
		return vs[0], len(vs)
	}
	return "", 0
}

func (s stdRequest) escapedPath() string { return s.r.URL.EscapedPath() }

func (s stdRequest) requestMethod() string { return s.r.Method }

func (s stdRequest) requestHost() string { return s.r.Host }

func (s stdRequest) remoteAddr() (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(s.r.RemoteAddr)
	return ap, err == nil
}

func (s stdRequest) conn() *connState {
	if cs, ok := s.r.Context().Value(connStateKey{}).(*connState); ok {
		return cs
	}
	return &connState{} // no ConnContext: per request
}

func (s stdRequest) localAddr() (netip.AddrPort, bool) {
	la, ok := s.r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(la.String())
	return ap, err == nil
}
