// Package userproxy is regedge's userspace registry proxy: what npm, bun,
// pnpm and yarn talk to with registry=http://EDGE:4873/. Every request goes
// through the checks of docs/protocol.md §4.2 in order, config headers (400),
// version (503), token (401), rate limit (429), routing (502), then is
// forwarded to the upstream registry chosen by registry hash, with the
// agent's config headers and the upstream's own credential; the client's
// token is verified here and never forwarded.
package userproxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/token"
)

// Upstream is one registry the proxy forwards to.
type Upstream struct {
	Hash      uint32
	URL       *url.URL      // scheme and host[:port] (and an optional path prefix)
	AuthToken string        // the edge's own credential upstream ("" for none)
	Timeout   time.Duration // response header timeout; 0 = Config.Timeout
	// TarballHosts are more origins (scheme://host[:port][/prefix]) whose
	// tarball URLs count as this upstream's (the npm registry's .com
	// alias); the upstream's own origin always counts.
	TarballHosts []*url.URL
}

// route is an upstream with its own connection pool and circuit breaker.
type route struct {
	*Upstream
	rt      http.RoundTripper
	br      *breaker
	pool    *upstreamPool // the fast path's connections
	prefix  string        // the URL's escaped path without a trailing slash
	timeout time.Duration // response header timeout
	// origins are where this upstream's tarball URLs may point (its own
	// origin first); hostHeader is the Host it is asked with (no default
	// port).
	origins    []origin
	hostHeader string
	rp         *httputil.ReverseProxy // the net/http path's forwarder
}

// Config is what the proxy needs.
type Config struct {
	Upstreams []Upstream
	Scopes    map[string]uint32 // "@scope" -> registry hash
	PerMinute int               // requests per minute per registry hash, all clients together
	// PerClientPerMinute limits each client (the token's sub, else the
	// source address); 0 = off (limits.go).
	PerClientPerMinute int
	// MaxConnections and MaxConnectionsPerIP cap open client connections
	// (0 = off; conncap.go).
	MaxConnections      int
	MaxConnectionsPerIP int
	Timeout             time.Duration // upstream response header timeout
	// BodyTimeout is the longest silence allowed between reads of an
	// upstream body (default 30 s), on both front ends and cache fills,
	// and of a client's request body (a publish).
	BodyTimeout time.Duration
	// TunnelIdle closes a CONNECT tunnel in which nothing moved either way
	// for this long (default 2 minutes, the keep-alive idle timeout).
	TunnelIdle time.Duration
	Versions   codec.VersionSet
	Tokens     *token.Verifier // nil: tokens are not checked (an open edge)
	// AnonymousRead lets reads (GET, HEAD, npm's audit POSTs) through
	// without a token; a token that is sent is still checked, and writes
	// still need one with ScopeRegistryWrite.
	AnonymousRead bool
	// Audit, when set, is the registry hash of the upstream that serves
	// /-/npm/v1/security/* (npm audit); nil: the request's own routing.
	Audit     *uint32
	PublicURL string // base for rewritten tarball URLs; "" = from the request
	Transport http.RoundTripper
	RootCAs   *x509.CertPool // CAs for upstream TLS; nil = the system's
	// Kernel, when the datapath is attached, is told each request's registry
	// hash on its connection's socket: TC counts the connection by it.
	Kernel SocketTagger
	// Blocker, when set, takes sources with repeated token failures into
	// the XDP block list: BlockAfter failures within BlockWindow block the
	// source for BlockTTL.
	Blocker     Blocker
	BlockAfter  int
	BlockWindow time.Duration
	BlockTTL    time.Duration
	// BlockExempt are never blocked, however often they fail (trusted
	// proxies, the config bus's sources).
	BlockExempt []netip.Prefix
	// TrustedProxies may set X-Forwarded-Proto and X-Forwarded-Host (used
	// for rewritten tarball URLs); from anyone else they are ignored.
	TrustedProxies []netip.Prefix
	// Circuit breaker per upstream: open after BreakerFailures consecutive
	// failures to reach it (connection errors, timeouts; never a response,
	// whatever its status) for BreakerCooldown, then
	// one probe. BreakerFailures < 0 turns it off; 0 means the default 5.
	BreakerFailures int
	BreakerCooldown time.Duration
	// Idempotent requests (GET, HEAD) that could not connect are retried
	// once while retries stay within RetryRatio of requests (default 0.1;
	// < 0 turns retries off).
	RetryRatio float64
	// Cache, when set, keeps tarballs and packuments on disk: packuments are
	// fresh for PackumentTTL then revalidated; a 404 is kept NegativeTTL;
	// when the upstream fails, a stale entry is served for up to
	// StaleIfError past its freshness.
	Cache        *edgecache.Cache
	PackumentTTL time.Duration
	NegativeTTL  time.Duration
	StaleIfError time.Duration
	// OnPackageChanged, when set, is called with the package a write
	// through the edge changed, once the upstream took it (2xx): the
	// agent tells the fleet. It must not block.
	OnPackageChanged func(pkg string)
	// AccessSample is log.access: 0 or 1 writes every access line, N > 1
	// one in N, < 0 none. The metrics count every request whatever it is.
	AccessSample int
	// AccessLog, when set, takes the access lines (one JSON line per
	// request, in the shape of the Logger's JSON lines) from a dedicated
	// encoder; it must be safe for concurrent use. nil: the Logger writes
	// them.
	AccessLog io.Writer
}

// Blocker puts a source prefix on the block list (loader.Objects).
type Blocker interface {
	Block(prefix netip.Prefix, ttl time.Duration) error
}

// SocketTagger tells the kernel which registry hash a client connection's
// traffic belongs to (loader.Objects).
type SocketTagger interface {
	TagSocket(c syscall.Conn, hash uint32) error
	UntagSocket(c syscall.Conn) error
}

// StateSource gives the agent's current state (the default for requests
// without config headers).
type StateSource interface{ State() codec.State }

// Proxy serves registry requests.
type Proxy struct {
	cfg      Config
	states   StateSource
	log      *slog.Logger
	routes   map[uint32]*route
	fallback *route
	audit    *route            // Config.Audit's
	labels   map[uint32]string // the hashes the config knows, as labels
	// otherHash stands, in the kernel's per-registry counters, for every
	// hash the config does not know (tellKernel): a hash the config knows
	// not, so those counters label it "other" as the proxy's metrics do.
	otherHash uint32
	budget    *retryBudget
	tokens    *tokenCache
	failures  *failureCounter

	limMu    sync.Mutex
	limiters map[string]*rate.Limiter // by hashLabel
	clients  *clientLimits            // nil: no per-client limit

	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	tokenChecks *prometheus.CounterVec
	limited     *prometheus.CounterVec
	mismatch    prometheus.Counter
	handedOn    prometheus.Counter
	connRefused *prometheus.CounterVec

	// Per-request work that repeats with the same inputs is done once:
	// the rendered config headers of the last state seen, and the request
	// counters by (hash, method, code).
	lastBlock atomic.Pointer[codec.HeaderBlock]
	counters  sync.Map // counterKey -> prometheus.Counter
	durations sync.Map // hash label -> prometheus.Observer

	// The cache's fills in progress (one upstream exchange per key), the
	// integrities of tarballs in packuments served, and when serving
	// stale was last logged.
	// draining: the server is shutting down; responses say
	// Connection: close.
	draining     atomic.Bool
	shutdownCut  prometheus.Counter
	flight       singleflight.Group
	flights      flights
	integrity    integrities
	lastStaleLog atomic.Int64

	accessSeq    atomic.Uint64    // requests seen, for log.access sample:N
	accessSample atomic.Int64     // Config.AccessSample, changed by a reload
	upstreams    *upstreamMetrics // reachability, breakers, latency per upstream
}

// durationOf returns regedge_proxy_request_duration_seconds for a hash
// label, cached.
func (p *Proxy) durationOf(hash string) prometheus.Observer {
	if o, ok := p.durations.Load(hash); ok {
		return o.(prometheus.Observer)
	}
	o := p.duration.WithLabelValues(hash)
	p.durations.Store(hash, o)
	return o
}

// dialAddr is host:port of an upstream URL, the scheme's port by default.
func dialAddr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// upstreamTLS is the fast path's TLS config for an https upstream (HTTP/1.1
// only), nil for http.
func upstreamTLS(u *url.URL, roots *x509.CertPool) *tls.Config {
	if u.Scheme != "https" {
		return nil
	}
	return &tls.Config{RootCAs: roots, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
}

type counterKey struct {
	hash       string
	method     string
	code       int
	answeredBy string
}

// counter returns regedge_proxy_requests_total for the labels, cached.
func (p *Proxy) counter(hash, method string, code int, answeredBy string) prometheus.Counter {
	k := counterKey{hash, method, code, answeredBy}
	if c, ok := p.counters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := p.requests.WithLabelValues(hash, method, strconv.Itoa(code), answeredBy)
	p.counters.Store(k, c)
	return c
}

// headerBlock returns the rendered config headers of st, reusing the last
// block when the state is the same (the common case: the agent's state).
func (p *Proxy) headerBlock(st codec.State) *codec.HeaderBlock {
	if b := p.lastBlock.Load(); b != nil && b.State() == st {
		return b
	}
	b := codec.NewHeaderBlock(st)
	p.lastBlock.Store(b)
	return b
}

// hashLabel is the registry_hash label of a request: its hash when the
// config knows it (an upstream's or a scope's), else "other". Hashes come
// from clients; labels, counters and rate limiters must not grow with them.
func (p *Proxy) hashLabel(h uint32) string {
	if l, ok := p.labels[h]; ok {
		return l
	}
	return "other"
}

// RegistryLabel is the registry_hash label the proxy's metrics give a hash:
// the hash when the config knows it, else "other". The kernel's
// per-registry counters are labelled by it too (loader.NewCollector), so
// both fold alike and neither grows with the hashes senders make up.
func (p *Proxy) RegistryLabel(hash uint32) string { return p.hashLabel(hash) }

// KnownRegistries are the registry hashes the config names (upstreams and
// scopes), those RegistryLabel labels by themselves, sorted.
func (p *Proxy) KnownRegistries() []uint32 {
	return slices.Sorted(maps.Keys(p.labels))
}

// methodLabel keeps the method label to the methods registries see.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodPatch:
		return m
	}
	return "OTHER"
}

// New returns a proxy. states supplies the agent's state per request.
func New(cfg Config, states StateSource, log *slog.Logger) (*Proxy, error) {
	if cfg.PerMinute <= 0 {
		cfg.PerMinute = 1000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.TunnelIdle <= 0 {
		cfg.TunnelIdle = 2 * time.Minute
	}
	p := &Proxy{
		cfg: cfg, states: states, log: log, routes: map[uint32]*route{},
		limiters: map[string]*rate.Limiter{}, tokens: newTokenCache(10000), failures: newFailureCounter(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regedge_proxy_requests_total", Help: "Proxied requests, by registry hash, method, status code and who answered (edge: a refusal the edge made; upstream; cache).",
		}, []string{"registry_hash", "method", "code", "answered_by"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "regedge_proxy_request_duration_seconds", Help: "Time to the end of the response, by registry hash.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"registry_hash"}),
		tokenChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regedge_token_verifications_total", Help: "Proxy token checks, by result.",
		}, []string{"result"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regedge_rate_limited_total", Help: "Requests refused with 429, by registry hash.",
		}, []string{"registry_hash"}),
		handedOn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regedge_proxy_handed_on_total", Help: "Connections the fast path passed to net/http (CONNECT, bodies, upgrades, large or unusual heads, HTTP/2).",
		}),
		shutdownCut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regedge_proxy_shutdown_cut_total", Help: "Client connections still busy when the shutdown grace ran out, and cut.",
		}),
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regedge_proxy_connections_refused_total", Help: "Client connections answered 503 and closed at a connection cap, by cap (total, per_ip).",
		}, []string{"cap"}),
		mismatch: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regedge_handoff_mismatch_total", Help: "Requests whose registry hash could not be handed to the kernel's per-socket accounting (their traffic is not counted per registry).",
		}),
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = 5
	}
	if cfg.BreakerCooldown <= 0 {
		cfg.BreakerCooldown = 10 * time.Second
	}
	if cfg.RetryRatio == 0 {
		cfg.RetryRatio = 0.1
	}
	p.cfg = cfg
	if cfg.PerClientPerMinute > 0 {
		p.clients = newClientLimits(cfg.PerClientPerMinute)
	}
	p.budget = newRetryBudget(cfg.RetryRatio)
	p.upstreams = newUpstreamMetrics()
	p.accessSample.Store(int64(cfg.AccessSample))
	p.labels = map[uint32]string{}
	for _, h := range cfg.Scopes {
		p.labels[h] = fmt.Sprintf("0x%08x", h)
	}
	for i := range cfg.Upstreams {
		u := &cfg.Upstreams[i]
		if _, dup := p.routes[u.Hash]; dup {
			return nil, fmt.Errorf("userproxy: two upstreams for hash 0x%08x", u.Hash)
		}
		timeout := u.Timeout
		if timeout <= 0 {
			timeout = cfg.Timeout
		}
		rt := cfg.Transport
		if rt == nil {
			// Response heads are checked for ambiguous framing before
			// net/http reads them (framing.go).
			dial, dialTLS := framingDialers(&tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
			rt = &http.Transport{
				Proxy:                 nil, // never chain to an environment proxy
				DialContext:           dial,
				DialTLSContext:        dialTLS,
				MaxIdleConns:          256,
				MaxIdleConnsPerHost:   64,
				IdleConnTimeout:       90 * time.Second,
				ResponseHeaderTimeout: timeout,
				ForceAttemptHTTP2:     true,
			}
		}
		p.labels[u.Hash] = fmt.Sprintf("0x%08x", u.Hash)
		r := &route{Upstream: u, rt: rt, br: newBreaker(cfg.BreakerFailures, cfg.BreakerCooldown),
			pool:   newUpstreamPool(dialAddr(u.URL), upstreamTLS(u.URL, cfg.RootCAs)),
			prefix: strings.TrimSuffix(u.URL.EscapedPath(), "/"), timeout: timeout,
			origins: []origin{originOf(u.URL)}, hostHeader: hostHeader(u.URL)}
		for _, th := range u.TarballHosts {
			r.origins = append(r.origins, originOf(th))
		}
		r.rp = p.reverseProxy(r)
		p.watch(r)
		p.routes[u.Hash] = r
		if u.Hash == 0 {
			p.fallback = r
		}
	}
	if cfg.Audit != nil {
		if p.audit = p.routes[*cfg.Audit]; p.audit == nil {
			return nil, fmt.Errorf("userproxy: the audit upstream 0x%08x is not one of the upstreams", *cfg.Audit)
		}
	}
	p.otherHash = 0xffffffff
	for _, known := p.labels[p.otherHash]; known; _, known = p.labels[p.otherHash] {
		p.otherHash--
	}
	return p, nil
}

// Collectors returns the proxy's metrics.
func (p *Proxy) Collectors() []prometheus.Collector {
	return append([]prometheus.Collector{p.requests, p.duration, p.tokenChecks, p.limited, p.mismatch, p.handedOn, p.shutdownCut, p.connRefused},
		p.upstreams.collectors()...)
}

// apiError is the JSON body of a refusal.
type apiError struct {
	Error  string `json:"error"`
	Header string `json:"header,omitempty"`
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
	Scope  string `json:"scope,omitempty"` // the token scope a 403 found missing
}

// ServeHTTP runs the checks in the order of §4.2 and forwards.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == SelfProbePath {
		serveSelfProbe(w)
		return
	}
	start := time.Now()
	rw := &recorder{ResponseWriter: w, code: http.StatusOK}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		rw.acc.client = ap.Addr().Unmap()
	}
	reqID := r.Header.Get(codec.HeaderRequestID)
	if !codec.ValidRequestID(reqID) {
		reqID = codec.NewRequestID()
	}
	rw.Header().Set(codec.HeaderRequestID, reqID)
	hash, upstream, tokenResult := uint32(0), "", ""
	defer func() {
		p.finished(start, reqID, hash, r.Method, r.URL.EscapedPath(), rw.code, rw.bytes, upstream, tokenResult, &rw.acc)
	}()

	v := p.admit(stdRequest{r})
	hash, tokenResult = v.hash, v.tokenResult
	if v.code != 0 {
		rw.acc.reason = refusalReason(&v)
		if v.retryAfter > 0 {
			rw.Header().Set("Retry-After", strconv.Itoa(v.retryAfter))
		}
		if closesConnection(v.code) {
			rw.Header().Set("Connection", "close")
		}
		writeJSON(rw, v.code, v.refusal)
		return
	}
	up, st := v.route, v.state
	upstream = up.URL.Host
	if r.Method == http.MethodConnect {
		p.tunnel(rw, r, up)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		// A client that stops sending its body mid-way (a publish) is cut
		// after BodyTimeout of silence, not held for ever.
		r.Body = &idleClientBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: p.cfg.BodyTimeout}
	}
	p.forward(rw, r, up, st, reqID, v.writeAuth || isRead(r.Method, r.URL.EscapedPath()))
}

// closesConnection: refusals after which the client's connection is
// closed: a client without a valid token (or sending garbage) does not
// keep a connection, and its memory, for the keep-alive timeout.
func closesConnection(code int) bool {
	return code == http.StatusUnauthorized || code == http.StatusBadRequest
}

// tunnel serves CONNECT host:port: only to the upstream routed for the
// request's registry hash (never an open proxy); after the checks the
// tunnel is plain TCP.
func (p *Proxy) tunnel(rw *recorder, r *http.Request, up *route) {
	want := dialAddr(up.URL)
	if !strings.EqualFold(r.Host, want) {
		rw.acc.reason = "connect_target"
		writeJSON(rw, http.StatusForbidden, apiError{Error: "CONNECT target is not the upstream for this registry hash", Rule: "want " + want})
		return
	}
	hj, ok := rw.ResponseWriter.(http.Hijacker)
	if !ok {
		writeJSON(rw, http.StatusInternalServerError, apiError{Error: "CONNECT needs HTTP/1.1"})
		return
	}
	upConn, err := net.DialTimeout("tcp", want, 5*time.Second)
	if err != nil {
		rw.acc.reason = "upstream_unreachable"
		rw.Header().Set("Retry-After", "5")
		writeJSON(rw, http.StatusBadGateway, apiError{Error: "Upstream unreachable"})
		return
	}
	client, buf, err := hj.Hijack()
	if err != nil {
		upConn.Close()
		return
	}
	rw.code, rw.wrote = http.StatusOK, true
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		client.Close()
		upConn.Close()
		return
	}
	// Bytes the client sent after the CONNECT head are already buffered.
	if n := buf.Reader.Buffered(); n > 0 {
		pending, _ := buf.Reader.Peek(n)
		_, _ = upConn.Write(pending) // a failed write shows in the copy below
	}
	rw.bytes += pipeIdle(client, upConn, p.cfg.TunnelIdle)
	client.Close()
	upConn.Close()
}

// checkToken verifies tok for a request of registry hash; it returns the
// token's entry (nil unless valid) and the result word of
// regedge_token_verifications_total.
func (p *Proxy) checkToken(tok string, hash uint32) (*cachedToken, string) {
	e, cached := p.tokens.get(tok)
	if !cached {
		c, err := p.cfg.Tokens.Verify(tok)
		if err != nil {
			var te *token.Error
			if errors.As(err, &te) {
				return nil, te.Result
			}
			return nil, token.ResultMalformed
		}
		e = p.tokens.put(tok, c)
	}
	if !e.allows(hash) {
		return nil, token.ResultHash
	}
	if cached {
		return e, "cached"
	}
	return e, token.ResultOK
}

// allow takes a token from the hash's bucket; when empty it says how long
// until one is available.
func (p *Proxy) allow(hash uint32) (time.Duration, bool) {
	key := p.hashLabel(hash) // "other": one bucket for every hash the config does not know
	p.limMu.Lock()
	l := p.limiters[key]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(float64(p.cfg.PerMinute)/60), p.cfg.PerMinute)
		p.limiters[key] = l
	}
	p.limMu.Unlock()
	res := l.Reserve()
	if d := res.Delay(); d > 0 {
		res.Cancel()
		return d, false
	}
	return 0, true
}

// hop-by-hop headers (RFC 9110 §7.6.1) and the client's credentials, which
// never go upstream.
var dropHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Authorization", codec.HeaderProxyToken,
	"Accept-Encoding", // the transport negotiates gzip itself and decodes it
}

// copyBufs are the buffers responses stream through: io.Copy would
// allocate and clear 32 KiB per request (pprof).
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// errClientGone: the client left before the upstream answered.
var errClientGone = errors.New("client went away")

// circuitOpen: the upstream's breaker is open.
type circuitOpen struct{ wait time.Duration }

func (c *circuitOpen) Error() string { return "circuit open" }

// forwardKey carries a request's forwarding inputs to the reverse proxy.
type forwardKey struct{}

type forwardInfo struct {
	in    *http.Request // the client's request
	state codec.State
	reqID string
	rw    *recorder
	// withAuth: the upstream's credential goes along (a read, or a write
	// whose token carries ScopeRegistryWrite).
	withAuth bool
}

// forward sends an admitted request upstream through the route's
// httputil.ReverseProxy: the requests the fast path hands on (writes,
// bodies, HTTP/2, unusual heads). Packuments are rebased by the same
// rewriter as on the fast path; nothing here is cached.
func (p *Proxy) forward(rw *recorder, r *http.Request, up *route, st codec.State, reqID string, withAuth bool) {
	ctx := context.WithValue(r.Context(), forwardKey{}, &forwardInfo{in: r, state: st, reqID: reqID, rw: rw, withAuth: withAuth})
	up.rp.ServeHTTP(rw, r.WithContext(ctx))
}

// reverseProxy builds a route's forwarder.
func (p *Proxy) reverseProxy(up *route) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			fi := pr.In.Context().Value(forwardKey{}).(*forwardInfo)
			pr.Out.URL.Scheme, pr.Out.URL.Host = up.URL.Scheme, up.URL.Host
			pr.Out.URL.Path = strings.TrimSuffix(up.URL.Path, "/") + pr.In.URL.Path
			pr.Out.URL.RawPath = ""
			if pr.In.URL.RawPath != "" { // keep %2f in scoped names as the client sent them
				pr.Out.URL.RawPath = strings.TrimSuffix(up.URL.EscapedPath(), "/") + pr.In.URL.RawPath
			}
			pr.Out.Host = up.hostHeader
			for _, h := range dropHeaders {
				pr.Out.Header.Del(h)
			}
			for _, h := range []string{codec.HeaderConfigDump, codec.HeaderConfigVersion, codec.HeaderRegistryHash, codec.HeaderFeatureFlags,
				codec.HeaderTerminalMode, codec.HeaderTerminalRows, codec.HeaderTerminalCols} {
				pr.Out.Header.Del(h)
			}
			for name, v := range p.headerBlock(fi.state).All() {
				pr.Out.Header[name] = v
			}
			pr.Out.Header.Set(codec.HeaderRequestID, fi.reqID)
			if up.AuthToken != "" && fi.withAuth {
				pr.Out.Header.Set("Authorization", "Bearer "+up.AuthToken)
			}
			pr.Out = boundInterim(pr.Out)
		},
		Transport:     &breakerTransport{p: p, up: up},
		FlushInterval: -1,
		BufferPool:    bufferPool{},
		ModifyResponse: func(resp *http.Response) error {
			r := resp.Request
			p.forgetPublished(r.Method, r.URL.EscapedPath(), resp.StatusCode)
			resp.Header.Del(codec.HeaderRequestID)
			if !rebasable(r.Method, r.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding")) {
				return nil
			}
			fi := r.Context().Value(forwardKey{}).(*forwardInfo)
			edge := p.edgeBase(fi.in)
			resp.Body = newRewriteReader(resp.Body, resp.Header.Get("Content-Encoding"), &rebaser{origins: up.origins, edge: edge},
				func(path, integrity string) { p.integrity.put(up.Hash, path, integrity) })
			resp.Header.Del("Content-Length")
			resp.Header.Del("Content-Encoding")
			resp.Header.Del("Etag")
			resp.ContentLength = -1
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			fi := r.Context().Value(forwardKey{}).(*forwardInfo)
			if r.Context().Err() != nil {
				fi.rw.code = 499 // as nginx logs it; there is nobody to answer
				fi.rw.acc.reason = "client_gone"
				return
			}
			if fi.rw.wrote { // the body broke off: cut the connection
				panic(http.ErrAbortHandler)
			}
			fi.rw.acc.reason = upstreamReason(err)
			e, retry := upstreamRefusal(err)
			w.Header().Set("Retry-After", strconv.Itoa(retry))
			writeJSON(w, answerCode(err), e)
		},
	}
}

// breakerTransport sends a forwarded request through the upstream's
// breaker and the retry budget.
type breakerTransport struct {
	p  *Proxy
	up *route
}

func (t *breakerTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	up := t.up
	if ok, wait := up.br.allow(); !ok {
		return nil, &circuitOpen{wait}
	}
	t.p.budget.deposit()
	out, at := armFraming(out)
	var body *gatedBody
	if out.Body != nil && out.Body != http.NoBody {
		body = &gatedBody{src: out.Body, at: at}
		out.Body = body
	}
	began := time.Now()
	resp, err := t.send(out, body)
	if err != nil && retryable(out, err) && t.p.budget.spend() {
		resp, err = t.send(out, body)
	}
	if err != nil && out.Context().Err() != nil {
		up.br.abandon() // the client went away: not the upstream's failure
		return nil, errClientGone
	}
	t.p.upstreamDone(up, began, err) // a 5xx is an answer: it never opens the breaker
	if err == nil {
		resp.Body = &idleBody{ReadCloser: resp.Body, idle: t.p.cfg.BodyTimeout}
	}
	return resp, err
}

// maxUnfitConns bounds how many unfit pooled connections (framing.go) one
// request meets before it gives up; each is closed, so a pool of stale
// connections drains.
const maxUnfitConns = 4

// send sends out, again on another connection while the one it got was
// unfit and nothing of it was sent (errUnfitConn, and its body untouched):
// not a failure of the upstream's, and never a second copy of a request.
func (t *breakerTransport) send(out *http.Request, body *gatedBody) (*http.Response, error) {
	resp, err := t.up.rt.RoundTrip(out)
	for i := 1; err != nil && i < maxUnfitConns && errors.Is(err, errUnfitConn) && body.untouched() && out.Context().Err() == nil; i++ {
		resp, err = t.up.rt.RoundTrip(out)
	}
	return resp, err
}

// idleBody fails a body read that waits longer than idle.
type idleBody struct {
	io.ReadCloser
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	t := time.AfterFunc(b.idle, func() { b.ReadCloser.Close() })
	n, err := b.ReadCloser.Read(p)
	if !t.Stop() && err != nil {
		err = fmt.Errorf("upstream body: no data for %v: %w", b.idle, os.ErrDeadlineExceeded)
	}
	return n, err
}

type bufferPool struct{}

func (bufferPool) Get() []byte  { return *copyBufs.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBufs.Put(&b) }

// rewriteReader is a packument body read through the rewriter.
type rewriteReader struct {
	src  io.ReadCloser
	zr   io.Reader
	w    *rewriter
	out  bytes.Buffer
	buf  []byte
	err  error
	gzip bool
}

func newRewriteReader(src io.ReadCloser, encoding string, rb *rebaser, learn func(path, integrity string)) *rewriteReader {
	r := &rewriteReader{src: src, gzip: strings.EqualFold(encoding, "gzip"), buf: make([]byte, 32<<10)}
	r.w = newRewriter(&r.out, rb)
	r.w.learn = learn
	return r
}

func (r *rewriteReader) Read(p []byte) (int, error) {
	for r.out.Len() == 0 && r.err == nil {
		if r.zr == nil {
			r.zr = r.src
			if r.gzip {
				zr, err := gzip.NewReader(r.src)
				if err != nil {
					r.err = err
					break
				}
				r.zr = zr
			}
		}
		n, err := r.zr.Read(r.buf)
		_, _ = r.w.Write(r.buf[:n]) // into a bytes.Buffer: never fails
		if err == io.EOF {
			_ = r.w.Close() // likewise
		}
		r.err = err
	}
	if r.out.Len() > 0 {
		return r.out.Read(p)
	}
	return 0, r.err
}

func (r *rewriteReader) Close() error { return r.src.Close() }

// retryable: an idempotent request without a body that failed to connect
// (a timeout is not retried: the upstream may be working on it).
func retryable(r *http.Request, err error) bool {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || (r.Body != nil && r.Body != http.NoBody) {
		return false
	}
	return dialFailed(err)
}

// edgeBase is the edge's base URL as the client of r sees it.
func (p *Proxy) edgeBase(r *http.Request) string {
	in := stdRequest{r}
	return p.edgeBaseOf(in, r.Host, r.TLS != nil || in.conn().tls != nil)
}

// edgeBaseOf is the edge's base URL for a request with this Host on a plain
// or TLS connection: the configured public URL, else from the request,
// with X-Forwarded-Proto/Host honoured only from trusted proxies.
func (p *Proxy) edgeBaseOf(in inbound, host string, isTLS bool) string {
	if p.cfg.PublicURL != "" {
		return strings.TrimSuffix(p.cfg.PublicURL, "/")
	}
	scheme := "http"
	if isTLS {
		scheme = "https"
	}
	if p.trusted(in) {
		if v, _ := in.header("X-Forwarded-Proto"); v == "http" || v == "https" {
			scheme = v
		}
		if v, _ := in.header("X-Forwarded-Host"); v != "" && plainHost(v) {
			host = v
		}
	}
	return scheme + "://" + host
}

func (p *Proxy) trusted(in inbound) bool {
	if len(p.cfg.TrustedProxies) == 0 {
		return false
	}
	src, ok := in.remoteAddr()
	if !ok {
		return false
	}
	for _, pr := range p.cfg.TrustedProxies {
		if pr.Contains(src.Addr().Unmap()) {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body := jsonBody(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

// jsonBody is a refusal's body on either front end: the JSON and a newline.
func jsonBody(v any) []byte {
	b, _ := json.Marshal(v)
	return append(b, '\n')
}

// recorder notes the status and bytes for the access log and metrics.
type recorder struct {
	http.ResponseWriter
	code  int
	bytes int64
	wrote bool
	acc   accessInfo
}

func (r *recorder) WriteHeader(code int) {
	// An interim 1xx (103 Early Hints, passed on by ReverseProxy) is
	// neither the answer's status nor the start of its body.
	if !r.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		r.code, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
