package userproxy

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type fixedState codec.State

func (s fixedState) State() codec.State { return codec.State(s) }

const (
	companyHash = 0xa1b2c3d4
	otherHash   = 0x0000beef
)

type edge struct {
	URL      string
	front    frontEnd
	shutdown func(context.Context) error // the front end's
	proxy    *Proxy
	key      ed25519.PrivateKey
	reg      *registry
}

func mustURL(s string) *url.URL { u, _ := url.Parse(s); return u }

// newEdge is an edge on the fast front end (proxy.fastPath's default).
func newEdge(t testing.TB, tweak func(*Config)) *edge {
	t.Helper()
	return newEdgeOn(t, fastFront, tweak)
}

// newEdgeOn is a proxy in front of a test registry with two packages,
// served on front end fe; tweak changes its config first.
func newEdgeOn(t testing.TB, fe frontEnd, tweak func(*Config)) *edge {
	t.Helper()
	reg := newRegistry(t,
		pkg{name: "hello-dep", version: "1.0.0", files: map[string]string{"index.js": "module.exports = 'dep';\n"}},
		pkg{name: "@mycompany/hello", version: "1.2.3", deps: map[string]string{"hello-dep": "^1.0.0"},
			files: map[string]string{"index.js": "module.exports = require('hello-dep') + ' hello';\n"}},
	)
	keyFile, pubFile, err := token.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := token.ReadPrivateKey(keyFile)
	v, err := token.NewVerifier([]string{pubFile}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Upstreams: []Upstream{{Hash: companyHash, URL: mustURL(reg.URL), AuthToken: "upstream-secret"}},
		Scopes:    map[string]uint32{"@mycompany": companyHash},
		PerMinute: 1000,
		Timeout:   2 * time.Second,
		Versions:  codec.DefaultVersions,
		Tokens:    v,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	p, err := New(cfg, fixedState(codec.DefaultState()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	addr, shutdown := serveFront(t, p, fe, nil)
	return &edge{URL: "http://" + addr, front: fe, shutdown: shutdown, proxy: p, key: key, reg: reg}
}

// token issues a read token (subject @mycompany, no scope) for hashes.
func (e *edge) token(t testing.TB, hashes ...string) string {
	t.Helper()
	return e.tokenFor(t, "@mycompany", "", hashes...)
}

func (e *edge) get(t testing.TB, path string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.URL+path, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPackumentRewrittenAndHeadersInjected(t *testing.T) {
	onBothFrontEnds(t, testPackumentRewrittenAndHeadersInjected)
}

func testPackumentRewrittenAndHeadersInjected(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, nil)
	tok := e.token(t, "0xa1b2c3d4")
	resp, body := e.get(t, "/@mycompany%2fhello", map[string]string{"Authorization": "Bearer " + tok})
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var doc struct {
		Versions map[string]struct {
			Dist struct{ Tarball string } `json:"dist"`
		} `json:"versions"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	if tb := doc.Versions["1.2.3"].Dist.Tarball; tb != e.URL+"/@mycompany/hello/-/hello-1.2.3.tgz" {
		t.Fatalf("tarball URL %q, want it on the edge %s", tb, e.URL)
	}
	path, h := e.reg.Last()
	if path != "/@mycompany%2fhello" {
		t.Errorf("upstream path %q: the scoped name must keep its %%2f", path)
	}
	if h.Get("X-Bun-Config-Dump") != "0x01a1b2c3d40000000702185000" || !codec.ValidRequestID(h.Get(codec.HeaderRequestID)) {
		t.Errorf("upstream headers %v", h)
	}
	if h.Get("Authorization") != "Bearer upstream-secret" || h.Get(codec.HeaderProxyToken) != "" {
		t.Errorf("upstream got Authorization %q: the client's token must never be forwarded", h.Get("Authorization"))
	}
	if resp.Header.Get(codec.HeaderRequestID) != h.Get(codec.HeaderRequestID) {
		t.Error("the request ID answered differs from the one sent upstream")
	}
	// The tarball through the edge, byte for byte.
	resp, tgz := e.get(t, "/@mycompany/hello/-/hello-1.2.3.tgz", map[string]string{"Authorization": "Bearer " + tok})
	if resp.StatusCode != 200 || tgz != string(e.reg.TarballAt("/@mycompany/hello/-/hello-1.2.3.tgz")) {
		t.Fatalf("tarball: %d, %d bytes", resp.StatusCode, len(tgz))
	}
	if got := promtest.ToFloat64(e.proxy.tokenChecks.WithLabelValues("cached")); got != 1 {
		t.Errorf("second request with the same token: cached verifications %v, want 1", got)
	}
}

// TestVerdictsInOrder: each check of §4.2 answers with its status and
// body, whatever came before it (every row is its own request); the rate
// limit, which counts, has its own subtest.
func TestVerdictsInOrder(t *testing.T) { onBothFrontEnds(t, testVerdictsInOrder) }

func testVerdictsInOrder(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, nil)
	tok := e.token(t, "0xa1b2c3d4")
	auth := "Bearer " + tok
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"registryHash":"0xa1b2c3d4","exp":9999999999}`)) + "."
	check := func(t *testing.T, e *edge, headers map[string]string, code int, want string) {
		t.Helper()
		resp, body := e.get(t, "/hello-dep", headers)
		if resp.StatusCode != code || !strings.Contains(body, want) {
			t.Errorf("%d %s; want %d with %s", resp.StatusCode, body, code, want)
		}
		if code == 429 && resp.Header.Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
		if strings.Contains(body, "PRIVATE") || strings.Contains(body, "BEGIN") {
			t.Error("key material in the body")
		}
	}
	for _, tc := range []struct {
		name    string
		headers map[string]string
		code    int
		body    string
	}{
		{"malformed header", map[string]string{"X-Bun-Terminal-Rows": "0", "Authorization": auth}, 400, `"header":"X-Bun-Terminal-Rows"`},
		{"disagreeing header", map[string]string{"X-Bun-Config-Dump": "0x01a1b2c3d40000000702185000", "X-Bun-Terminal-Rows": "40", "Authorization": auth}, 400, `disagrees`},
		{"version 2", map[string]string{"X-Bun-Config-Dump": "0x02a1b2c3d40000000702185000", "Authorization": auth}, 503, `Config version mismatch`},
		{"no token", nil, 401, `"reason":"missing"`},
		{"alg none", map[string]string{"Authorization": "Bearer " + none}, 401, `"reason":"alg"`},
		{"garbage token", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", 8192)}, 401, `"reason":"malformed"`},
		{"token for another hash", map[string]string{"Authorization": "Bearer " + e.token(t, "0x0000beef")}, 401, `"reason":"hash"`},
		{"unknown hash, no fallback", map[string]string{"X-Bun-Registry-Hash": "0x0000beef", "Authorization": "Bearer " + e.token(t, "0x0000beef")}, 502, `Unknown registry hash`},
		{"ok by Authorization", map[string]string{"Authorization": auth}, 200, `"hello-dep"`},
		{"ok by X-Bun-Proxy-Token", map[string]string{"X-Bun-Proxy-Token": tok}, 200, `"hello-dep"`},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, e, tc.headers, tc.code, tc.body) })
	}
	t.Run("over the limit", func(t *testing.T) {
		limited := newEdgeOn(t, fe, func(c *Config) { c.PerMinute = 3 })
		auth := map[string]string{"Authorization": "Bearer " + limited.token(t, "0xa1b2c3d4")}
		for range 3 {
			check(t, limited, auth, 200, `"hello-dep"`)
		}
		check(t, limited, auth, 429, `Rate limit`)
	})
}

func TestScopeNeverFallsThrough(t *testing.T) { onBothFrontEnds(t, testScopeNeverFallsThrough) }

func testScopeNeverFallsThrough(t *testing.T, fe frontEnd) {
	fallback := newRegistry(t, pkg{name: "@evil/thing", version: "9.9.9"})
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Scopes["@evil"] = otherHash // a scope with no upstream of its own
		c.Upstreams = append(c.Upstreams, Upstream{Hash: 0, URL: mustURL(fallback.URL)})
	})
	tok := e.token(t, "0xa1b2c3d4", "0x0000beef", "0x00000000")
	resp, body := e.get(t, "/@evil%2fthing", map[string]string{"Authorization": "Bearer " + tok})
	if resp.StatusCode != 502 || fallback.Count() != 0 {
		t.Fatalf("scoped to a hash without upstream: %d %s; fallback saw %d requests", resp.StatusCode, body, fallback.Count())
	}
	// An unscoped request with an unrouted hash does use the fallback.
	resp, _ = e.get(t, "/left-pad", map[string]string{"Authorization": "Bearer " + tok, "X-Bun-Registry-Hash": "0x0000beef"})
	if resp.StatusCode != 404 || fallback.Count() != 1 {
		t.Fatalf("unscoped unrouted request: %d, fallback saw %d", resp.StatusCode, fallback.Count())
	}
}

func TestUpstreamFailures(t *testing.T) { onBothFrontEnds(t, testUpstreamFailures) }

func testUpstreamFailures(t *testing.T, fe frontEnd) {
	// Down: a closed port answers 502 with Retry-After, quickly.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String()
	ln.Close()
	// Stalled: accepts and never answers.
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer stall.Close()
	// Broken: promises 1000 bytes, sends 10, hangs up.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte("0123456789"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer broken.Close()
	for _, tc := range []struct {
		name, upstream, path string
		code                 int
	}{
		{"down", down, "/x", 502},
		{"stalled", stall.URL, "/x", 504},
	} {
		e := newEdgeOn(t, fe, func(c *Config) {
			c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(tc.upstream)}}
			c.Timeout = 300 * time.Millisecond
		})
		resp, body := e.get(t, tc.path, map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")})
		if resp.StatusCode != tc.code || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: %d %s (Retry-After %q)", tc.name, resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
	}
	e := newEdgeOn(t, fe, func(c *Config) { c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(broken.URL)}} })
	req, _ := http.NewRequest(http.MethodGet, e.URL+"/hello-dep/-/hello-dep-1.0.0.tgz", nil)
	req.Header.Set("Authorization", "Bearer "+e.token(t, "0xa1b2c3d4"))
	// The head reaches the client as soon as it is known; the body that
	// broke off must not arrive as complete.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("no response head: %v", err)
	}
	defer resp.Body.Close()
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("a body that broke off upstream arrived as complete (%d bytes)", len(b))
	}
}

func connect(t *testing.T, e *edge, target string, headers map[string]string) (net.Conn, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	for k, v := range headers {
		req += k + ": " + v + "\r\n"
	}
	io.WriteString(c, req+"\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	return c, resp
}

func TestConnectOnlyToTheRoutedUpstream(t *testing.T) {
	onBothFrontEnds(t, testConnectOnlyToTheRoutedUpstream)
}

func testConnectOnlyToTheRoutedUpstream(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, nil)
	// A tunnel is not a read: what goes through it is not seen by the
	// edge, so it needs registry:write like every other non-read.
	auth := map[string]string{"Authorization": "Bearer " + e.tokenFor(t, "ci", "registry:write", "0xa1b2c3d4")}
	routed := strings.TrimPrefix(e.reg.URL, "http://")
	// Another host: 403, the proxy is never an open proxy.
	if _, resp := connect(t, e, "example.com:443", auth); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT to another host: %d", resp.StatusCode)
	}
	if _, resp := connect(t, e, routed, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("CONNECT without a token: %d", resp.StatusCode)
	}
	if _, resp := connect(t, e, routed, map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT with a read token: %d", resp.StatusCode)
	}
	c, resp := connect(t, e, routed, auth)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT to the routed upstream: %d", resp.StatusCode)
	}
	// Plain TCP through the tunnel: an HTTP request straight to the upstream.
	io.WriteString(c, "GET /hello-dep HTTP/1.1\r\nHost: "+routed+"\r\nConnection: close\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || !strings.Contains(string(body), `"hello-dep"`) {
		t.Fatalf("through the tunnel: %d %s", r.StatusCode, body)
	}
}

type recordingBlocker struct {
	mu      sync.Mutex
	blocked []netip.Prefix
	ttl     time.Duration
}

func (b *recordingBlocker) Block(p netip.Prefix, ttl time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blocked, b.ttl = append(b.blocked, p), ttl
	return nil
}

// TestRepeatedTokenFailuresBlockTheSource: the proxy hands a source that
// keeps failing token checks to the block list (loader.Objects.Block in the
// agent; its XDP effect is tested in internal/loader).
func TestRepeatedTokenFailuresBlockTheSource(t *testing.T) {
	onBothFrontEnds(t, testRepeatedTokenFailuresBlockTheSource)
}

func testRepeatedTokenFailuresBlockTheSource(t *testing.T, fe frontEnd) {
	b := &recordingBlocker{}
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Blocker, c.BlockAfter, c.BlockWindow, c.BlockTTL = b, 3, time.Minute, 10*time.Minute
	})
	good := e.token(t, "0xa1b2c3d4")
	for i := 0; i < 2; i++ {
		e.get(t, "/hello-dep", map[string]string{"Authorization": "Bearer bad"})
	}
	e.get(t, "/hello-dep", map[string]string{"Authorization": "Bearer " + good}) // successes do not count
	if len(b.blocked) != 0 {
		t.Fatalf("blocked after 2 failures: %v", b.blocked)
	}
	for i := 0; i < 10; i++ { // a missing token is never a failure
		e.get(t, "/hello-dep", nil)
	}
	if len(b.blocked) != 0 {
		t.Fatalf("blocked for missing tokens: %v", b.blocked)
	}
	e.get(t, "/hello-dep", map[string]string{"Authorization": "Bearer bad"})
	if len(b.blocked) != 1 || b.blocked[0] != netip.MustParsePrefix("127.0.0.1/32") || b.ttl != 10*time.Minute {
		t.Fatalf("after 3 failures: %v for %v", b.blocked, b.ttl)
	}
	// A source in BlockExempt (a trusted proxy, a bus source) is never blocked.
	x := &recordingBlocker{}
	e = newEdgeOn(t, fe, func(c *Config) {
		c.Blocker, c.BlockAfter, c.BlockWindow, c.BlockTTL = x, 1, time.Minute, time.Minute
		c.BlockExempt = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	for i := 0; i < 5; i++ {
		e.get(t, "/hello-dep", map[string]string{"Authorization": "Bearer bad"})
	}
	if len(x.blocked) != 0 {
		t.Fatalf("an exempt source was blocked: %v", x.blocked)
	}
}

func TestForwardedHeadersOnlyFromTrustedProxies(t *testing.T) {
	onBothFrontEnds(t, testForwardedHeadersOnlyFromTrustedProxies)
}

func testForwardedHeadersOnlyFromTrustedProxies(t *testing.T, fe frontEnd) {
	for _, trusted := range []bool{false, true} {
		e := newEdgeOn(t, fe, func(c *Config) {
			if trusted {
				c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			}
		})
		_, body := e.get(t, "/hello-dep", map[string]string{
			"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4"), "X-Forwarded-Proto": "https", "X-Forwarded-Host": "edge.example",
		})
		want := e.URL + "/hello-dep/-/"
		if trusted {
			want = "https://edge.example/hello-dep/-/"
		}
		if !strings.Contains(body, want) {
			t.Errorf("trusted=%v: tarball URL is not on %s: %s", trusted, want, body)
		}
	}
}

// TestTLSBothSides: the edge serves TLS (certificate reloaded on demand) and
// forwards to an upstream over TLS signed by a test CA; a real TLS client
// fetches a packument whose tarball URLs point at the edge over https.
func TestTLSBothSides(t *testing.T) {
	reg := newRegistry(t, pkg{name: "hello-dep", version: "1.0.0"})
	reg.Close()
	tlsReg := httptest.NewUnstartedServer(reg.Config.Handler)
	tlsReg.StartTLS()
	defer tlsReg.Close()
	pool := x509.NewCertPool()
	pool.AddCert(tlsReg.Certificate())

	p, err := New(Config{
		Upstreams: []Upstream{{Hash: companyHash, URL: mustURL(tlsReg.URL)}},
		Versions:  codec.DefaultVersions,
		RootCAs:   pool,
	}, fixedState(codec.DefaultState()), quiet)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := testutil.SelfSignedCert(t, dir, "first")
	certs, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	edgeSrv := httptest.NewUnstartedServer(p)
	edgeSrv.TLS = certs.TLSConfig()
	edgeSrv.StartTLS()
	defer edgeSrv.Close()

	fetch := func() (*http.Response, string) {
		t.Helper()
		cp := x509.NewCertPool()
		raw, _ := os.ReadFile(certFile)
		cp.AppendCertsFromPEM(raw)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cp, ServerName: "edge.test"}}}
		resp, err := c.Get(edgeSrv.URL + "/hello-dep")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := fetch()
	if resp.StatusCode != 200 || !strings.Contains(body, `"tarball":"https://`+strings.TrimPrefix(edgeSrv.URL, "https://")+`/hello-dep/-/`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	first := resp.TLS.PeerCertificates[0].SerialNumber
	// A new pair on disk is served after Reload; a broken one is refused.
	testutil.SelfSignedCert(t, dir, "second")
	if err := certs.Reload(); err != nil {
		t.Fatal(err)
	}
	resp, _ = fetch()
	if resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first) == 0 {
		t.Fatal("the reloaded certificate is not served")
	}
	os.WriteFile(certFile, []byte("broken"), 0o600)
	if err := certs.Reload(); err == nil {
		t.Fatal("a broken certificate was accepted")
	}
}

// TestCircuitBreaker: the breaker is about reaching the upstream. A path
// that answers 500 is passed on as often as it is asked and stops nothing
// else; connections that fail open the breaker (logged once, exported),
// the next requests fail fast without a dial, and a good probe after the
// cooldown closes it.
func TestCircuitBreaker(t *testing.T) { onBothFrontEnds(t, testCircuitBreaker) }

func testCircuitBreaker(t *testing.T, fe frontEnd) {
	var mu sync.Mutex
	cut := false // the upstream hangs up on every connection
	calls := 0
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		c := cut
		mu.Unlock()
		if c {
			panic(http.ErrAbortHandler) // the connection closes before a response head
		}
		if r.URL.Path == "/broken" {
			http.Error(w, "this path is broken", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	logs := &lockedBuffer{}
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
		// A cooldown the real clock never reaches in a test: only the
		// test's clock ends it.
		c.BreakerFailures, c.BreakerCooldown = 2, time.Hour
		c.RetryRatio = -1
	})
	e.proxy.log = slog.New(slog.NewJSONHandler(logs, nil))
	br := e.proxy.routes[companyHash].br
	clock := testutil.NewClock(time.Now())
	br.now = clock.Now // before the first request: every reading is the test's
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	name := strings.TrimPrefix(up.URL, "http://")
	open := func() float64 { return promtest.ToFloat64(e.proxy.upstreams.open.WithLabelValues(name)) }
	upGauge := func() float64 { return promtest.ToFloat64(e.proxy.upstreams.up.WithLabelValues(name)) }

	// A path returning 500s, ten times the breaker's limit: every one is
	// the upstream's answer, and the other paths are served throughout.
	for i := 0; i < 20; i++ {
		if resp, _ := e.get(t, "/broken", auth); resp.StatusCode != 500 {
			t.Fatalf("/broken %d: %d, want the upstream's 500", i, resp.StatusCode)
		}
		if resp, body := e.get(t, "/fine", auth); resp.StatusCode != 204 {
			t.Fatalf("/fine after %d 500s: %d %s", i+1, resp.StatusCode, body)
		}
	}
	if open() != 0 || upGauge() != 1 || br.state() != "closed" {
		t.Fatalf("after 500s: breaker %s, open gauge %v, up %v", br.state(), open(), upGauge())
	}

	// Connections that fail: two open the breaker; the third request
	// fails fast, the upstream never sees it.
	mu.Lock()
	cut = true
	mu.Unlock()
	for i := 0; i < 2; i++ {
		if resp, _ := e.get(t, "/fine", auth); resp.StatusCode != 502 {
			t.Fatalf("cut connection %d: %d", i, resp.StatusCode)
		}
	}
	mu.Lock()
	before := calls
	mu.Unlock()
	resp, body := e.get(t, "/fine", auth)
	mu.Lock()
	seen := calls - before
	mu.Unlock()
	// The clock has not moved since the breaker opened: the whole
	// cooldown is still to come (Retry-After rounds up, one second more).
	if resp.StatusCode != 502 || !strings.Contains(body, "circuit open") || resp.Header.Get("Retry-After") != "3601" || seen != 0 {
		t.Fatalf("open breaker: %d %s, Retry-After %q, upstream calls %d", resp.StatusCode, body, resp.Header.Get("Retry-After"), seen)
	}
	if open() != 1 || upGauge() != 0 || br.state() != "open" {
		t.Fatalf("open breaker: state %s, exported as open=%v up=%v", br.state(), open(), upGauge())
	}
	mu.Lock()
	cut = false
	mu.Unlock()
	// A second short of the cooldown it still fails fast; at the cooldown
	// it is half-open and the next request is the probe, whose success
	// closes it.
	clock.Advance(time.Hour - time.Second)
	if resp, _ := e.get(t, "/fine", auth); resp.StatusCode != 502 || resp.Header.Get("Retry-After") != "2" || br.state() != "open" {
		t.Fatalf("a second before the cooldown ends: %d, Retry-After %q, state %s", resp.StatusCode, resp.Header.Get("Retry-After"), br.state())
	}
	clock.Advance(time.Second)
	if st := br.state(); st != "half-open" {
		t.Fatalf("at the end of the cooldown the breaker is %s, want half-open", st)
	}
	if resp, _ = e.get(t, "/fine", auth); resp.StatusCode != 204 || br.state() != "closed" {
		t.Fatalf("the probe: %d, breaker %s", resp.StatusCode, br.state())
	}
	if resp, _ = e.get(t, "/fine", auth); resp.StatusCode != 204 || open() != 0 || upGauge() != 1 {
		t.Fatalf("after a good probe: %d, open=%v up=%v", resp.StatusCode, open(), upGauge())
	}
	var opened, closed int
	for _, l := range logs.lines() {
		switch {
		case strings.Contains(l, "circuit breaker opened"):
			opened++
		case strings.Contains(l, "circuit breaker closed"):
			closed++
		}
	}
	if opened != 1 || closed != 1 {
		t.Fatalf("transition lines: %d opened, %d closed:\n%s", opened, closed, strings.Join(logs.lines(), "\n"))
	}
	if promtest.CollectAndCount(e.proxy.upstreams.duration) != 1 {
		t.Fatal("no upstream latency histogram")
	}
}

func TestRetryOnlyIdempotentConnectFailures(t *testing.T) {
	dialErr := &net.OpError{Op: "dial", Err: errors.New("connection refused")}
	get, _ := http.NewRequest(http.MethodGet, "http://u/", http.NoBody)
	put, _ := http.NewRequest(http.MethodPut, "http://u/", strings.NewReader("x"))
	if !retryable(get, dialErr) || retryable(put, dialErr) || retryable(get, context.DeadlineExceeded) {
		t.Fatal("retryable: want GET after a dial error only")
	}
	b := newRetryBudget(0.1)
	if !b.spend() || b.spend() {
		t.Fatal("the budget allows one retry up front")
	}
	for i := 0; i < 10; i++ {
		b.deposit()
	}
	if !b.spend() {
		t.Fatal("ten requests earn one retry")
	}
}

func TestTokenCacheExpiresAndIsBounded(t *testing.T) {
	c := newTokenCache(3)
	clock := testutil.NewClock(time.Now())
	c.nowNano = func() int64 { return clock.Now().UnixNano() }
	exp := clock.Now().Add(time.Minute).Truncate(time.Second) // NumericDate keeps whole seconds
	short := &token.Claims{RegistryHash: "0xa1b2c3d4", RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(exp)}}
	c.put("tok-short", short)
	if e, ok := c.get("tok-short"); !ok || !e.allows(companyHash) || e.allows(otherHash) {
		t.Fatal("a fresh entry was not served")
	}
	clock.Advance(exp.Sub(clock.Now()) - time.Nanosecond)
	if _, ok := c.get("tok-short"); !ok {
		t.Fatal("an entry a nanosecond before its token's exp was not served")
	}
	clock.Advance(time.Nanosecond)
	if _, ok := c.get("tok-short"); ok {
		t.Fatal("an expired token was still served from the cache")
	}
	if len(c.m) != 0 {
		t.Fatalf("the expired entry was kept: %d entries", len(c.m))
	}
	long := &token.Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}
	for i := 0; i < 10; i++ {
		c.put(fmt.Sprintf("tok-%d", i), long)
	}
	if len(c.m) > 3 {
		t.Fatalf("%d entries in a cache bounded at 3", len(c.m))
	}
}

// TestClientHashesDoNotGrowState: hashes chosen by clients never become
// metric labels or rate limit buckets of their own.
func TestClientHashesDoNotGrowState(t *testing.T) { onBothFrontEnds(t, testClientHashesDoNotGrowState) }

func testClientHashesDoNotGrowState(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, func(c *Config) { c.Tokens = nil })
	for i := 0; i < 50; i++ {
		e.get(t, "/x", map[string]string{"X-Bun-Registry-Hash": fmt.Sprintf("0x%08x", 0x10000+i)})
	}
	if n := len(e.proxy.limiters); n != 1 {
		t.Fatalf("%d rate limit buckets after 50 unknown hashes, want 1 (other)", n)
	}
	if n := promtest.CollectAndCount(e.proxy.requests); n != 1 {
		t.Fatalf("%d request series after 50 unknown hashes, want 1", n)
	}
}

// TestTokenAttacks: every forged or broken token is a 401 with its own
// reason, in the body and in regedge_token_verifications_total.
func TestTokenAttacks(t *testing.T) { onBothFrontEnds(t, testTokenAttacks) }

func testTokenAttacks(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, nil)
	good := e.token(t, "0xa1b2c3d4")
	parts := strings.Split(good, ".")
	pub := e.key.Public().(ed25519.PublicKey)
	// HS256 keyed with the public key's bytes (the classic alg confusion).
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, token.Claims{RegistryHash: "0xa1b2c3d4",
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}})
	confused, _ := hs.SignedString([]byte(pub))
	unknownKid, _ := token.Issue(e.key, "nosuchkey", token.Claims{RegistryHash: "0xa1b2c3d4",
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}})
	tamperedPayload := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"registryHash":"0x0000beef","exp":9999999999}`)) + "." + parts[2]
	expired, _ := token.Issue(e.key, "", token.Claims{RegistryHash: "0xa1b2c3d4",
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Hour))}})
	notyet, _ := token.Issue(e.key, "", token.Claims{RegistryHash: "0xa1b2c3d4", RegisteredClaims: jwt.RegisteredClaims{
		NotBefore: jwt.NewNumericDate(time.Now().Add(time.Hour)), ExpiresAt: jwt.NewNumericDate(time.Now().Add(2 * time.Hour))}})
	for _, tc := range []struct{ name, tok, reason string }{
		{"HS256 keyed with the public key", confused, "alg"},
		{"unknown kid", unknownKid, "signature"},
		{"tampered payload", tamperedPayload, "signature"},
		{"truncated", good[:len(good)/2], "malformed"},
		{"expired", expired, "expired"},
		{"nbf in the future", notyet, "notyet"},
		{"8 KiB of junk", strings.Repeat("A", 8192), "malformed"},
		{"wrong registryHash", e.token(t, "0x0000beef"), "hash"},
	} {
		before := promtest.ToFloat64(e.proxy.tokenChecks.WithLabelValues(tc.reason))
		resp, body := e.get(t, "/hello-dep", map[string]string{"Authorization": "Bearer " + tc.tok})
		if resp.StatusCode != 401 || !strings.Contains(body, `"reason":"`+tc.reason+`"`) {
			t.Errorf("%s: %d %s, want 401 reason %s", tc.name, resp.StatusCode, body, tc.reason)
		}
		if got := promtest.ToFloat64(e.proxy.tokenChecks.WithLabelValues(tc.reason)) - before; got != 1 {
			t.Errorf("%s: regedge_token_verifications_total{result=%q} moved by %v", tc.name, tc.reason, got)
		}
	}
}
