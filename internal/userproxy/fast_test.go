package userproxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/testutil"
)

func TestParseRequestTakesOnlyWhatItUnderstands(t *testing.T) {
	const ok = "GET /left-pad HTTP/1.1\r\nHost: e\r\n"
	for _, tc := range []struct {
		name, head string
		take       bool
	}{
		{"plain GET", ok + "\r\n", true},
		{"HEAD with query", "HEAD /-/v1/search?text=x HTTP/1.1\r\nHost: e\r\n\r\n", true},
		{"scoped, encoded", "GET /@scope%2fname HTTP/1.1\r\nHost: e:4873\r\nAccept: application/vnd.npm.install-v1+json\r\n\r\n", true},
		{"keep-alive and close", ok + "Connection: keep-alive, close\r\n\r\n", true},
		{"PUT", "PUT /x HTTP/1.1\r\nHost: e\r\n\r\n", false},
		{"CONNECT", "CONNECT e:443 HTTP/1.1\r\nHost: e:443\r\n\r\n", false},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: e\r\n\r\n", false},
		{"absolute form", "GET http://e/ HTTP/1.1\r\nHost: e\r\n\r\n", false},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", false},
		{"two Hosts", ok + "Host: f\r\n\r\n", false},
		{"Host with a path", "GET / HTTP/1.1\r\nHost: e/x\r\n\r\n", false},
		{"a body length", ok + "Content-Length: 0\r\n\r\n", false},
		{"chunked", ok + "Transfer-Encoding: chunked\r\n\r\n", false},
		{"upgrade", ok + "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false},
		{"expect", ok + "Expect: 100-continue\r\n\r\n", false},
		{"Connection names a header", ok + "Connection: X-Secret\r\n\r\n", false},
		{"obs-fold", ok + "X-A: 1\r\n  folded\r\n\r\n", false},
		{"bare LF inside", ok + "X-A: 1\nX-B: 2\r\n\r\n", false},
		{"space before colon", ok + "X-A : 1\r\n\r\n", false},
		{"NUL in a value", ok + "X-A: a\x00b\r\n\r\n", false},
		{"space in the target", "GET /a b HTTP/1.1\r\nHost: e\r\n\r\n", false},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: e\r\n\r\n", false},
		{"leading empty line", "\r\n" + ok + "\r\n", false},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: e\r\n\r\n", false},
		{"bad escape", "GET /a%zz HTTP/1.1\r\nHost: e\r\n\r\n", false},
		{"cut escape", "GET /a%4 HTTP/1.1\r\nHost: e\r\n\r\n", false},
	} {
		var r fastRequest
		if got := parseRequest([]byte(tc.head), &r); got != tc.take {
			t.Errorf("%s: taken %v, want %v", tc.name, got, tc.take)
		}
	}
	var r fastRequest
	if !parseRequest([]byte("GET /@a%2fb?write=true HTTP/1.1\r\nhost: e\r\naccept-encoding: br, gzip;q=0.5\r\nx-bun-registry-hash: 0x00000001\r\n\r\n"), &r) {
		t.Fatal("not taken")
	}
	if r.path != "/@a%2fb" || r.target != "/@a%2fb?write=true" || r.host != "e" || !r.gzipOK {
		t.Errorf("parsed %+v", r)
	}
	if v, n := r.header("X-Bun-Registry-Hash"); v != "0x00000001" || n != 1 {
		t.Errorf("header lookup is case-insensitive: %q %d", v, n)
	}
	for v, want := range map[string]bool{"gzip": true, "GZIP;q=1": true, "deflate": false, "gzip;q=0": false, "gzip; q=0.000": false, "br, gzip;q=0.1": true} {
		if acceptsGzip(v) != want {
			t.Errorf("acceptsGzip(%q) = %v", v, !want)
		}
	}
}

func TestParseResponse(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		ok         bool
		length     int64
		chunked    bool
		close      bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true, 12, false, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, -1, true, false},
		{"CL with TE is an error (RFC 9112 §6.3)", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, false, false},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false, 0, false, false},
		{"to close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", true, -1, false, true},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", true, 1, false, true},
		{"no reason", "HTTP/1.1 204\r\n\r\n", true, -1, false, false},
		{"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", true, 3, false, false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false, 0, false, false},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, 0, false, false},
		{"gzip transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, 0, false, false},
		{"not HTTP", "ICY 200 OK\r\n\r\n", false, 0, false, false},
		{"bad code", "HTTP/1.1 2x0 OK\r\n\r\n", false, 0, false, false},
		{"CR in a value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", false, 0, false, false},
	} {
		var h upstreamHead
		err := parseResponse([]byte(tc.head), &h)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if tc.ok && (h.length != tc.length || h.chunked != tc.chunked || h.close != tc.close) {
			t.Errorf("%s: length %d chunked %v close %v", tc.name, h.length, h.chunked, h.close)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("GET /left-pad HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer x\r\n\r\n"))
	f.Add([]byte("HEAD /@a%2fb?x=1 HTTP/1.1\r\nHost: e\r\nConnection: close\r\nAccept-Encoding: gzip\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("GET /?a=%zz HTTP/1.1\r\nHost: [::1]:80\r\nX-A:\t v\xff \t\r\nAccept: */*\r\n\r\n"))
	f.Add([]byte("HEAD /x HTTP/1.1\r\nHOST: e\r\nconnection: Close\r\nX-Bun-Config-Dump: 0x01a1b2c3d40000000702185000\r\n\r\n"))
	f.Add([]byte("GET /x HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\nX-Forwarded-Host: h\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		i := bytes.Index(b, crlfcrlf)
		if i < 0 {
			return
		}
		var r fastRequest
		if !parseRequest(b[:i+4], &r) {
			return
		}
		// What the fast path takes is a bodiless GET or HEAD with one sane
		// Host and an origin-form target: nothing that could frame a body.
		if (r.method != "GET" && r.method != "HEAD") || r.target == "" || r.target[0] != '/' || r.host == "" || !visibleASCII(r.target) {
			t.Fatalf("took %q as %+v", b, r)
		}
		for _, h := range []string{"Content-Length", "Transfer-Encoding", "Upgrade", "Expect"} {
			if _, n := r.header(h); n != 0 {
				t.Fatalf("took a request with %s", h)
			}
		}
		for k := 0; k < r.n; k++ {
			if !isToken(r.names[k]) || !fieldValue(r.values[k]) {
				t.Fatalf("header %q: %q", r.names[k], r.values[k])
			}
		}
		// Differential: net/http reads the same head the same way, so a
		// request cannot mean one thing to the fast path and another to
		// the net/http path (or to the upstream behind either).
		hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:i+4])))
		if err != nil {
			t.Fatalf("the fast path took %q, net/http refuses it: %v", b[:i+4], err)
		}
		if hr.Method != r.method || hr.RequestURI != r.target || hr.Host != r.host || hr.ContentLength != 0 || len(hr.TransferEncoding) != 0 || hr.Close != r.close {
			t.Fatalf("%q: net/http %s %s host %q length %d te %v close %v; fast path %+v", b[:i+4], hr.Method, hr.RequestURI, hr.Host, hr.ContentLength, hr.TransferEncoding, hr.Close, r)
		}
		for _, name := range []string{"Authorization", "X-Bun-Config-Dump", "X-Bun-Registry-Hash", "Accept", "X-Forwarded-Host"} {
			v, n := r.header(name)
			if vs := hr.Header[name]; len(vs) != n || (n > 0 && vs[0] != v) {
				t.Fatalf("%q: %s is %q to net/http, %q (%d) to the fast path", b[:i+4], name, vs, v, n)
			}
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: application/json\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 404 Not Found\r\nConnection: close\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		i := bytes.Index(b, crlfcrlf)
		if i < 0 {
			return
		}
		var h upstreamHead
		if parseResponse(b[:i+4], &h) != nil {
			return
		}
		if h.status < 100 || h.status > 999 || (h.chunked && h.length != -1) || h.length < -1 || len(h.names) != len(h.values) {
			t.Fatalf("%q parsed as %+v", b, h)
		}
		// Differential: net/http's client frames the same head the same way.
		hr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b[:i+4])), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("parsed %q, net/http refuses it: %v", b[:i+4], err)
		}
		chunked := len(hr.TransferEncoding) > 0 && hr.TransferEncoding[0] == "chunked"
		if hr.StatusCode != h.status || chunked != h.chunked || (!h.chunked && h.length >= 0 && !noBody("GET", h.status) && hr.ContentLength != h.length) {
			t.Fatalf("%q: net/http %d length %d te %v; parsed %+v", b[:i+4], hr.StatusCode, hr.ContentLength, hr.TransferEncoding, h)
		}
	})
}

// testOrigin is an upstream for the framing tests, counting its connections.
type testOrigin struct {
	*httptest.Server
	conns    atomic.Int64
	mu       sync.Mutex
	encoding []string // Accept-Encoding of each request
}

func newOrigin(t *testing.T) *testOrigin {
	o := &testOrigin{}
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		io.WriteString(zw, s)
		zw.Close()
		return b.Bytes()
	}
	o.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.encoding = append(o.encoding, r.Header.Get("Accept-Encoding"))
		o.mu.Unlock()
		base := "http://" + r.Host
		if r.TLS != nil {
			base = "https://" + r.Host
		}
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "first half, ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "second half")
		case "/to-close":
			c, buf, _ := w.(http.Hijacker).Hijack()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the upstream hangs up")
			buf.Flush()
			c.Close()
		case "/chunked-packument", "/chunked-gz-packument":
			// Packuments sent chunked, plain or gzipped, the final chunk
			// in a later write: as big registries send them.
			w.Header().Set("Content-Type", "application/json")
			doc := []byte(`{"name":"p","versions":{"1.0.0":{"dist":{"tarball":"` + base + `/p/-/p-1.0.0.tgz"}}}}`)
			if r.URL.Path == "/chunked-gz-packument" {
				w.Header().Set("Content-Encoding", "gzip")
				doc = gz(string(doc))
			}
			w.Write(doc[:len(doc)/2])
			w.(http.Flusher).Flush()
			w.Write(doc[len(doc)/2:])
			w.(http.Flusher).Flush()
		case "/gz-packument":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Etag", `"upstream"`)
			w.Write(gz(`{"name":"gz-packument","versions":{"1.0.0":{"dist":{"tarball":"` + base + `/gz-packument/-/gz-packument-1.0.0.tgz"}}}}`))
		case "/gz-packument/-/gz-packument-1.0.0.tgz":
			w.Header().Set("Content-Type", "application/octet-stream")
			if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(gz("tarball bytes"))
				return
			}
			io.WriteString(w, "tarball bytes")
		default:
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "plain "+r.Method)
		}
	}))
	o.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			o.conns.Add(1)
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	return o
}

// rawExchange writes raw on one connection and reads n responses.
func rawExchange(t *testing.T, addr, raw string, methods ...string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	var out []*http.Response
	for _, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("response %d: %v", len(out)+1, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", len(out)+1, err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		out = append(out, resp)
	}
	return out
}

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

func TestFastPathFramingAndEncodings(t *testing.T) {
	o := newOrigin(t)
	e := newEdge(t, func(c *Config) { c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(o.URL)}} })
	addr := strings.TrimPrefix(e.URL, "http://")
	auth := "Authorization: Bearer " + e.token(t, "0xa1b2c3d4") + "\r\n"
	get := func(path, extra string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n" + auth + extra + "\r\n"
	}
	// Pipelined on one connection: a chunked answer (re-chunked to the
	// client), one that ends with the upstream's close, a HEAD, and a
	// packument gzipped upstream that is unpacked, rewritten and sent
	// plain; then the tarball, passed on still gzipped to a client that
	// takes gzip.
	resps := rawExchange(t, addr,
		get("/chunked", "")+get("/to-close", "")+"HEAD /plain HTTP/1.1\r\nHost: "+addr+"\r\n"+auth+"\r\n"+
			get("/gz-packument", "Accept-Encoding: gzip\r\n")+get("/gz-packument/-/gz-packument-1.0.0.tgz", "Accept-Encoding: gzip\r\n"),
		"GET", "GET", "HEAD", "GET", "GET")
	if r := resps[0]; r.StatusCode != 200 || body(r) != "first half, second half" || len(r.TransferEncoding) == 0 {
		t.Errorf("chunked: %d %v", r.StatusCode, r.TransferEncoding)
	}
	if r := resps[1]; r.StatusCode != 200 || body(r) != "until the upstream hangs up" || r.Close {
		t.Errorf("to close: %d close=%v", r.StatusCode, r.Close)
	}
	if r := resps[2]; r.StatusCode != 200 || r.ContentLength != int64(len("plain HEAD")) || body(r) != "" {
		t.Errorf("HEAD: %d length %d", r.StatusCode, r.ContentLength)
	}
	pk := resps[3]
	if b := body(pk); pk.StatusCode != 200 || pk.Header.Get("Content-Encoding") != "" || pk.Header.Get("Etag") != "" ||
		!strings.Contains(b, `"tarball":"http://`+addr+`/gz-packument/-/gz-packument-1.0.0.tgz"`) || pk.ContentLength != -1 {
		t.Errorf("gzipped packument: %d %v %s", pk.StatusCode, pk.Header, b)
	}
	tb := resps[4]
	zr, err := gzip.NewReader(tb.Body)
	if err != nil || tb.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("tarball to a gzip client: %v %v", err, tb.Header)
	}
	if b, _ := io.ReadAll(zr); string(b) != "tarball bytes" {
		t.Errorf("tarball %q", b)
	}
	// A client that does not take gzip: the edge does not ask for it.
	r := rawExchange(t, addr, get("/gz-packument/-/gz-packument-1.0.0.tgz", "Connection: close\r\n"), "GET")[0]
	if b := body(r); b != "tarball bytes" || r.Header.Get("Content-Encoding") != "" {
		t.Errorf("identity client: %q %v", b, r.Header)
	}
	o.mu.Lock()
	if last := o.encoding[len(o.encoding)-1]; last != "" {
		t.Errorf("upstream asked for %q for a client without Accept-Encoding", last)
	}
	o.mu.Unlock()
	if n := promtest.ToFloat64(e.proxy.handedOn); n != 0 {
		t.Errorf("%v connections went to net/http; the fast path takes all of these", n)
	}
}

func TestFastPathReusesUpstreamConnectionsAndSurvivesStaleOnes(t *testing.T) {
	o := newOrigin(t)
	e := newEdge(t, func(c *Config) { c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(o.URL)}} })
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	for i := 0; i < 20; i++ {
		if r, b := e.get(t, "/plain", auth); r.StatusCode != 200 || b != "plain GET" {
			t.Fatalf("request %d: %d %q", i, r.StatusCode, b)
		}
	}
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("20 sequential requests opened %d upstream connections, want 1", n)
	}
	// The upstream drops its idle connections: the next request finds its
	// pooled connection dead, and is sent again on a new one.
	o.CloseClientConnections()
	if r, b := e.get(t, "/plain", auth); r.StatusCode != 200 || b != "plain GET" {
		t.Fatalf("after the upstream closed the pooled connection: %d %q", r.StatusCode, b)
	}
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("upstream connections %d, want 2", n)
	}
}

// TestChunkedPackumentsKeepTheUpstreamConnection: a chunked packument is
// read to its last chunk before rewriting, so its upstream connection goes
// back to the pool instead of being closed.
func TestChunkedPackumentsKeepTheUpstreamConnection(t *testing.T) {
	o := newOrigin(t)
	e := newEdge(t, func(c *Config) { c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(o.URL)}} })
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4"), "Accept-Encoding": "gzip"}
	for i := 0; i < 6; i++ {
		path := []string{"/chunked-packument", "/chunked-gz-packument"}[i%2]
		r, b := e.get(t, path, auth)
		if r.StatusCode != 200 || !strings.Contains(b, `"tarball":"`+e.URL+`/p/-/p-1.0.0.tgz"`) {
			t.Fatalf("%s: %d %s", path, r.StatusCode, b)
		}
	}
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("6 chunked packuments used %d upstream connections, want 1", n)
	}
}

func TestFastPathHandsOnWhatItDoesNotServe(t *testing.T) {
	e := newEdge(t, nil)
	addr := strings.TrimPrefix(e.URL, "http://")
	auth := "Authorization: Bearer " + e.tokenFor(t, "ci", "registry:write", "0xa1b2c3d4") + "\r\n"
	// A GET the fast path serves, then on the same connection a PUT with a
	// body: the connection moves to net/http with the PUT unread.
	resps := rawExchange(t, addr,
		"GET /hello-dep HTTP/1.1\r\nHost: "+addr+"\r\n"+auth+"\r\n"+
			"PUT /hello-dep HTTP/1.1\r\nHost: "+addr+"\r\n"+auth+"Content-Length: 2\r\n\r\n{}"+
			"GET /hello-dep HTTP/1.1\r\nHost: "+addr+"\r\n"+auth+"Connection: close\r\n\r\n",
		"GET", "PUT", "GET")
	if resps[0].StatusCode != 200 || resps[2].StatusCode != 200 || !strings.Contains(body(resps[2]), `"hello-dep"`) {
		t.Fatalf("GETs around the PUT: %d %d", resps[0].StatusCode, resps[2].StatusCode)
	}
	if resps[1].StatusCode == 0 || resps[1].Header.Get("X-Bun-Request-Id") == "" {
		t.Fatalf("PUT: %d %v", resps[1].StatusCode, resps[1].Header)
	}
	if n := promtest.ToFloat64(e.proxy.handedOn); n != 1 {
		t.Errorf("handed on %v connections, want 1", n)
	}
	reg := e.reg
	if n := reg.Count(); n != 3 {
		t.Errorf("the upstream saw %d requests, want 3", n)
	}
	// Refusals on the fast path carry the status, body and Retry-After that
	// net/http's path gives the same request.
	for _, h := range []string{"X-Bun-Terminal-Rows: 0", "X-Bun-Config-Version: 2", "Authorization: Bearer x.y.z", "X-Bun-Registry-Hash: 0x0000beef\r\n" + auth[:len(auth)-2]} {
		r := rawExchange(t, addr, "GET /hello-dep HTTP/1.1\r\nHost: "+addr+"\r\n"+h+"\r\nConnection: close\r\n\r\n", "GET")[0]
		req := httptest.NewRequest(http.MethodGet, "/hello-dep", nil)
		for _, line := range strings.Split(h, "\r\n") {
			k, v, _ := strings.Cut(line, ": ")
			req.Header.Add(k, v)
		}
		rec := httptest.NewRecorder()
		e.proxy.ServeHTTP(rec, req)
		if got, want := body(r), rec.Body.String(); r.StatusCode != rec.Code || got != want || r.StatusCode < 400 ||
			r.Header.Get("Retry-After") != rec.Header().Get("Retry-After") || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: fast path %d %q, net/http %d %q", h, r.StatusCode, got, rec.Code, want)
		}
	}
}

func TestFastPathTLSUpstream(t *testing.T) {
	reg := newRegistry(t, pkg{name: "hello-dep", version: "1.0.0"})
	tlsReg := httptest.NewUnstartedServer(reg.Config.Handler)
	tlsReg.StartTLS()
	defer tlsReg.Close()
	e := newEdge(t, func(c *Config) {
		c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(tlsReg.URL)}}
		c.RootCAs = tlsReg.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	})
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	r, b := e.get(t, "/hello-dep", auth)
	if r.StatusCode != 200 || !strings.Contains(b, `"tarball":"`+e.URL+`/hello-dep/-/hello-dep-1.0.0.tgz"`) {
		t.Fatalf("over TLS: %d %s", r.StatusCode, b)
	}
	if n := promtest.ToFloat64(e.proxy.handedOn); n != 0 {
		t.Errorf("handed on %v", n)
	}
}

// flakyListener fails its first Accepts with EMFILE, as a process out of
// descriptors sees.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestFastServerOutlivesAcceptErrors(t *testing.T) {
	e := newEdge(t, func(c *Config) { c.Tokens = nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(3)
	srv := &Server{Proxy: e.proxy, Fallback: &http.Server{Handler: e.proxy}, HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(fl) }()
	client := &http.Client{Timeout: 5 * time.Second} // without the backoff nobody accepts
	resp, err := client.Get("http://" + ln.Addr().String() + "/hello-dep")
	if err != nil {
		t.Fatalf("after EMFILE from accept: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || fl.fails.Load() >= 0 {
		t.Fatalf("%d; accept failures left %d", resp.StatusCode, fl.fails.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

// TestCacheOnTheFastPath: with the edge cache on, GETs stay on the fast
// front end: misses streamed (chunked), hits with a Content-Length,
// packuments rewritten, HEAD without a body, all pipelined on one
// connection.
func TestCacheOnTheFastPath(t *testing.T) {
	o := newOrigin(t)
	c, err := edgecache.Open(t.TempDir(), 1<<24, edgecache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEdge(t, func(cfg *Config) {
		cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(o.URL)}}
		cfg.Cache, cfg.PackumentTTL = c, time.Hour
	})
	addr := strings.TrimPrefix(e.URL, "http://")
	auth := "Authorization: Bearer " + e.token(t, "0xa1b2c3d4") + "\r\n"
	get := func(method, path string) string {
		return method + " " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n" + auth + "\r\n"
	}
	resps := rawExchange(t, addr,
		get("GET", "/gz-packument")+get("GET", "/gz-packument")+get("GET", "/chunked-packument")+get("GET", "/chunked-packument")+get("HEAD", "/plain")+get("GET", "/plain"),
		"GET", "GET", "GET", "GET", "HEAD", "GET")
	for i, r := range resps[:2] {
		b := body(r)
		wantLength := int64(len(b)) // a hit
		if i == 0 {
			wantLength = -1 // a miss, rewritten as it streams
		}
		if r.StatusCode != 200 || !strings.Contains(b, `"tarball":"http://`+addr+`/gz-packument/-/gz-packument-1.0.0.tgz"`) || r.ContentLength != wantLength {
			t.Errorf("packument %d: %d %v %s", i, r.StatusCode, r.Header, b)
		}
	}
	if resps[1].Header.Get("X-Regedge-Cache") != "hit" || resps[3].Header.Get("X-Regedge-Cache") != "hit" {
		t.Errorf("second fetches not from the cache: %v / %v", resps[1].Header, resps[3].Header)
	}
	if b := body(resps[3]); !strings.Contains(b, `"tarball":"http://`+addr+`/p/-/p-1.0.0.tgz"`) || resps[3].ContentLength != int64(len(b)) {
		t.Errorf("cached chunked answer: %q, length %d", b, resps[3].ContentLength)
	}
	if r := resps[4]; r.StatusCode != 200 || body(r) != "" {
		t.Errorf("HEAD: %d", r.StatusCode)
	}
	if r := resps[5]; r.StatusCode != 200 || body(r) != "plain GET" || r.Header.Get("X-Bun-Request-Id") == "" {
		t.Errorf("GET after HEAD: %d %v", r.StatusCode, r.Header)
	}
	if got := promtest.ToFloat64(c.Hits); got != 2 {
		t.Errorf("cache hits %v, want 2", got)
	}
	if n := promtest.ToFloat64(e.proxy.handedOn); n != 0 {
		t.Errorf("%v connections handed to net/http", n)
	}
}

// recordingTagger records what the proxy tells the kernel about sockets:
// the socket (by its local and remote address, read from the socket
// itself) and the hash, or untag.
type recordingTagger struct {
	mu    sync.Mutex
	calls []string
}

func (k *recordingTagger) record(c syscall.Conn, what string) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var local, remote unix.Sockaddr
	raw.Control(func(fd uintptr) {
		local, _ = unix.Getsockname(int(fd))
		remote, _ = unix.Getpeername(int(fd))
	})
	l, ok1 := local.(*unix.SockaddrInet4)
	r, ok2 := remote.(*unix.SockaddrInet4)
	if !ok1 || !ok2 {
		return fmt.Errorf("not a connected TCP/IPv4 socket: %T %T", local, remote)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, fmt.Sprintf("%d<-%d %s", l.Port, r.Port, what))
	return nil
}

func (k *recordingTagger) TagSocket(c syscall.Conn, hash uint32) error {
	return k.record(c, fmt.Sprintf("0x%08x", hash))
}

func (k *recordingTagger) UntagSocket(c syscall.Conn) error { return k.record(c, "untag") }

func (k *recordingTagger) take() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.calls
	k.calls = nil
	return out
}

// TestKernelToldEachRequestsHash: on both front ends, the kernel is told a
// connection's registry hash on the connection's own socket, once per
// change (keep-alive requests for different hashes each re-tag it), and a
// request whose config headers are malformed takes the hash away. A hash
// the config does not know (0x0000beef here) is told as the one stand-in
// for all of them, so clients cannot fill the kernel's counters.
func TestKernelToldEachRequestsHash(t *testing.T) {
	kernel := &recordingTagger{}
	e := newEdge(t, func(c *Config) { c.Kernel = kernel })
	addr := strings.TrimPrefix(e.URL, "http://")
	_, portText, _ := net.SplitHostPort(addr)
	auth := "Authorization: Bearer " + e.token(t, "0xa1b2c3d4", "0x0000beef") + "\r\n"
	req := func(method, hash, extra string) string {
		return method + " /hello-dep HTTP/1.1\r\nHost: " + addr + "\r\n" + auth + "X-Bun-Registry-Hash: " + hash + "\r\n" + extra + "\r\n"
	}
	sameSocket := func(calls []string, want ...string) {
		t.Helper()
		if len(calls) != len(want) {
			t.Fatalf("kernel told %q, want %q", calls, want)
		}
		for i, c := range calls {
			sock, what, _ := strings.Cut(c, " ")
			first, _, _ := strings.Cut(calls[0], " ")
			if what != want[i] || sock != first || !strings.HasPrefix(sock, portText+"<-") {
				t.Fatalf("kernel told %q, want %q on the proxy's side of one connection", calls, want)
			}
		}
	}
	// Fast path: A, A, B, malformed on one connection (a 400 closes the
	// connection, so the malformed request comes last).
	rawExchange(t, addr, req("GET", "0xa1b2c3d4", "")+req("GET", "0xa1b2c3d4", "")+req("GET", "0x0000beef", "")+
		req("GET", "0xnothex", ""), "GET", "GET", "GET", "GET")
	other := fmt.Sprintf("0x%08x", e.proxy.otherHash)
	if e.proxy.RegistryLabel(e.proxy.otherHash) != "other" {
		t.Fatalf("the stand-in 0x%08x is a configured hash", e.proxy.otherHash)
	}
	sameSocket(kernel.take(), "0xa1b2c3d4", other, "untag")
	// net/http: two PUTs on one connection, one hash.
	rawExchange(t, addr, req("PUT", "0x0000beef", "Content-Length: 2\r\n")+"{}"+req("PUT", "0x0000beef", "Content-Length: 2\r\n")+"{}", "PUT", "PUT")
	sameSocket(kernel.take(), other)
	if m := promtest.ToFloat64(e.proxy.mismatch); m != 0 {
		t.Errorf("%v hand-over failures", m)
	}
}

// TestFastServerShutdownBeforeServe: a Shutdown that comes before Serve
// (a fast SIGTERM) makes Serve return at once instead of serving forever.
func TestFastServerShutdownBeforeServe(t *testing.T) {
	e := newEdge(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Proxy: e.proxy, Fallback: &http.Server{Handler: e.proxy}, HeaderTimeout: time.Second, IdleTimeout: time.Second}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve after Shutdown did not return")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the listener still accepts")
	}
}

// TestFastPathTLS: on a TLS listener, HTTP/1.1 requests are served on the
// fast path and HTTP/2 (by ALPN) by net/http; rewritten tarball URLs are
// https either way, also for a request the fast path hands on.
func TestFastPathTLS(t *testing.T) {
	e := newEdge(t, nil)
	base, pem := serveTLSFront(t, e.proxy, fastFront)
	client := func(h2 bool) *http.Client { return testutil.TLSClient(pem, h2) }
	auth := "Bearer " + e.token(t, "0xa1b2c3d4")
	fetch := func(c *http.Client, extra map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/hello-dep", nil)
		req.Header.Set("Authorization", auth)
		for k, v := range extra {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	want := `"tarball":"` + base + `/hello-dep/-/hello-dep-1.0.0.tgz"`
	resp, b := fetch(client(false), nil)
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 || !strings.Contains(b, want) || promtest.ToFloat64(e.proxy.handedOn) != 0 {
		t.Fatalf("HTTP/1.1 over TLS: %d %s, handed on %v: %s", resp.StatusCode, resp.Proto, promtest.ToFloat64(e.proxy.handedOn), b)
	}
	// Expect makes the fast path hand the connection on; the rewrite is
	// still https.
	resp, b = fetch(client(false), map[string]string{"Expect": "100-continue"})
	if resp.StatusCode != 200 || !strings.Contains(b, want) || promtest.ToFloat64(e.proxy.handedOn) != 1 {
		t.Fatalf("handed on over TLS: %d, handed on %v: %s", resp.StatusCode, promtest.ToFloat64(e.proxy.handedOn), b)
	}
	resp, b = fetch(client(true), nil)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(b, want) || promtest.ToFloat64(e.proxy.handedOn) != 2 {
		t.Fatalf("HTTP/2: %d %s, handed on %v: %s", resp.StatusCode, resp.Proto, promtest.ToFloat64(e.proxy.handedOn), b)
	}
}

// TestFastServerDefaults: a Server without timeouts keeps connections
// alive (a zero idle timeout would cut every keep-alive at once).
func TestFastServerDefaults(t *testing.T) {
	e := newEdge(t, func(c *Config) { c.Tokens = nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Proxy: e.proxy, Fallback: &http.Server{Handler: e.proxy}}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() { srv.Shutdown(context.Background()); <-done }()
	addr := ln.Addr().String()
	get := "GET /hello-dep HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 2; i++ { // the second request waits for the first answer: an idle gap
		io.WriteString(c, get)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on one connection: %v", i+1, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i+1, resp.StatusCode)
		}
	}
}

// FuzzServeConn sends arbitrary bytes to the front end (fast path, hand-on
// to net/http, forwarding to a fixture upstream) and checks that nothing
// panics and that the next client is still served.
func FuzzServeConn(f *testing.F) {
	e := newEdge(f, func(c *Config) { c.Tokens, c.PerMinute = nil, 1<<30 })
	addr := strings.TrimPrefix(e.URL, "http://")
	f.Add([]byte("GET /hello-dep HTTP/1.1\r\nHost: e\r\n\r\nGET /hello-dep/-/hello-dep-1.0.0.tgz HTTP/1.1\r\nHost: e\r\n\r\n"))
	f.Add([]byte("HEAD /hello-dep HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n"))
	f.Add([]byte("PUT /hello-dep HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\nHost: e\r\n\r\n"))
	f.Add([]byte("GET /hello-dep HTTP/1.1\r\nHost: e\r\nX-Bun-Config-Dump: 0x02a1b2c3d40000000702185000\r\n\r\n"))
	f.Add([]byte("CONNECT e:1 HTTP/1.1\r\nHost: e:1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(b)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c) // whatever the answer, until the edge closes or the deadline
		c.Close()
		// The edge still serves.
		r := rawExchange(t, addr, "GET /hello-dep HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n", "GET")[0]
		if r.StatusCode != 200 {
			t.Fatalf("after %q: %d", b, r.StatusCode)
		}
	})
}
