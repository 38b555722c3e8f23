package userproxy

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/regedge/regedge/internal/testutil"
)

// TestStrayUpstreamBytesNeverReachAnotherClient: an upstream that sends
// bytes nobody asked for (a full extra response after a 304, or one past a
// Content-Length body, in the same write or later) leaves them waiting on
// a pooled connection; the edge must discard that connection, not read the
// stray response as the answer to the next client's request (for another
// package). On both front ends: the fast one's own pool and the net/http
// path's http.Transport (framing.go), over plain TCP and TLS upstream.
func TestStrayUpstreamBytesNeverReachAnotherClient(t *testing.T) {
	onBothFrontEnds(t, testStrayUpstreamBytesNeverReachAnotherClient)
}

func testStrayUpstreamBytesNeverReachAnotherClient(t *testing.T, fe frontEnd) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"name\":\"stray\"}\n"
	const body = `{"name":"a"}`
	cases := []struct {
		name   string
		answer string // to /a, before the stray response
		status int
		later  bool // the stray bytes come once the client has its answer (else in the same write)
		upload bool // the next request has a body (net/http may not resend it once read)
	}{
		{"after 304", "HTTP/1.1 304 Not Modified\r\nEtag: \"1\"\r\n\r\n", http.StatusNotModified, true, false},
		{"after 304, then an upload", "HTTP/1.1 304 Not Modified\r\nEtag: \"1\"\r\n\r\n", http.StatusNotModified, true, true},
		{"past Content-Length, later", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body), 200, true, false},
		{"past Content-Length, same write", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body), 200, false, false},
		{"past a chunked body, same write", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nc\r\n" + body + "\r\n0\r\n\r\n", 200, false, false},
	}
	for _, tc := range cases {
		for _, overTLS := range []bool{false, true} {
			name := tc.name
			if overTLS {
				name += ", TLS"
			}
			t.Run(name, func(t *testing.T) {
				sendStray, strayWritten := make(chan struct{}), make(chan struct{})
				var uploads atomic.Int64
				handle := func(path string, c net.Conn) {
					if strings.HasPrefix(path, "/-/package/") {
						uploads.Add(1)
					}
					switch path {
					case "/a":
						if !tc.later {
							io.WriteString(c, tc.answer+stray)
							close(strayWritten)
							return
						}
						io.WriteString(c, tc.answer)
						<-sendStray // once the client has its answer
						io.WriteString(c, stray)
						close(strayWritten)
					default:
						body := `{"name":"b"}`
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					}
				}
				var up *faultUpstream
				var roots *x509.CertPool
				if overTLS {
					up, roots = newTLSFaultUpstream(t, handle)
				} else {
					up = newFaultUpstream(t, handle)
				}
				e := newEdgeOn(t, fe, func(c *Config) {
					c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
					c.RootCAs = roots
				})
				auth := "Bearer " + e.token(t, "0xa1b2c3d4")
				resp, got := e.get(t, "/a", map[string]string{"Authorization": auth, "If-None-Match": `"1"`})
				if resp.StatusCode != tc.status || (tc.status == 200 && !strings.Contains(got, `"name":"a"`)) {
					t.Fatalf("/a: %d %q, want the upstream's %d", resp.StatusCode, got, tc.status)
				}
				close(sendStray)
				<-strayWritten // on loopback the bytes are now in the edge's socket
				if tc.upload {
					write := "Bearer " + e.tokenFor(t, "release", "registry:write", "0xa1b2c3d4")
					resp, got = e.do(t, http.MethodPut, "/-/package/b/dist-tags/latest", `"1.0.0"`, map[string]string{"Authorization": write})
					if n := uploads.Load(); n != 1 {
						t.Errorf("the upload reached the upstream %d times, want once", n)
					}
				} else {
					resp, got = e.get(t, "/b", map[string]string{"Authorization": auth})
				}
				if resp.StatusCode != 200 || !strings.Contains(got, `"name":"b"`) {
					t.Fatalf("the next request answered %d %q: another request's stray bytes", resp.StatusCode, got)
				}
			})
		}
	}
}

// TestUpstreamFramingErrorsAre502: a response head whose framing is
// ambiguous (Content-Length with Transfer-Encoding: chunked) or invalid
// (Content-Length "+5", "-5", "5x", two different values) is answered 502
// on both front ends; nothing of its body reaches the client.
func TestUpstreamFramingErrorsAre502(t *testing.T) {
	onBothFrontEnds(t, testUpstreamFramingErrorsAre502)
}

func testUpstreamFramingErrorsAre502(t *testing.T, fe frontEnd) {
	heads := map[string]string{
		"/cl-te":   "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
		"/te-cl":   "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
		"/plus":    "Content-Length: +5\r\n",
		"/minus":   "Content-Length: -5\r\n",
		"/suffix":  "Content-Length: 5x\r\n",
		"/two":     "Content-Length: 5\r\nContent-Length: 6\r\n",
		"/list":    "Content-Length: 5, 6\r\n",
		"/te-gzip": "Transfer-Encoding: gzip, chunked\r\n",
	}
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		first, _, _ := strings.Cut(path[1:], "/") // /cl-te and /cl-te/-/x-1.0.0.tgz
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"+heads["/"+first]+"\r\n5\r\nhello\r\n0\r\n\r\n")
	})
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
		c.BreakerFailures = -1
	})
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	for path := range heads {
		for _, p := range []string{path, path + "/-/x-1.0.0.tgz"} {
			resp, body := e.do(t, http.MethodGet, p, "", auth)
			if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "hello") {
				t.Errorf("GET %s: %d %q, want 502", p, resp.StatusCode, body)
			}
		}
	}
}

// TestInvalidHostsNeverReflected: a Host net/http would refuse is handed
// to net/http (which answers 400), and a Host that is valid HTTP but not a
// plain host[:port] is refused 400: neither ever becomes the base of the
// tarball URLs in a packument.
func TestInvalidHostsNeverReflected(t *testing.T) { onBothFrontEnds(t, testInvalidHostsNeverReflected) }

func testInvalidHostsNeverReflected(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, nil)
	addr := strings.TrimPrefix(e.URL, "http://")
	auth := "Authorization: Bearer " + e.token(t, "0xa1b2c3d4") + "\r\n"
	for _, host := range []string{`ex"ample`, `a\b`, "a<b>", "evil.example#x", "evil.example/x", "evil.example?x",
		"a'b", "a(b)", "evil.example;x=1", "a!b", "a*b", "a$b", "a%41b", "a:b:c", "[::1", "x:99999a", "evil.example,other"} {
		r := rawExchange(t, addr, "GET /hello-dep HTTP/1.1\r\nHost: "+host+"\r\n"+auth+"Connection: close\r\n\r\n", "GET")[0]
		b := body(r)
		if r.StatusCode != http.StatusBadRequest || strings.Contains(b, host) {
			t.Errorf("Host %q: %d %q, want 400 and never the Host in the body", host, r.StatusCode, b)
		}
	}
	for _, host := range []string{"edge.example", "edge.example:4873", "127.0.0.1:1", "[::1]:4873", "EDGE.example"} {
		r := rawExchange(t, addr, "GET /hello-dep HTTP/1.1\r\nHost: "+host+"\r\n"+auth+"Connection: close\r\n\r\n", "GET")[0]
		if b := body(r); r.StatusCode != 200 || !strings.Contains(b, `"tarball":"http://`+host+`/hello-dep/-/`) {
			t.Errorf("Host %q: %d %s", host, r.StatusCode, b)
		}
	}
}

// TestBareLFHeadsAreHandedOn: a request head with bare LF line ends goes to
// net/http (which reads it), at once: the fast path does not wait for a
// CRLF CRLF that never comes (until the header timeout, when it would close
// the connection without an answer).
func TestBareLFHeadsAreHandedOn(t *testing.T) {
	e := newEdge(t, func(c *Config) { c.Tokens = nil })
	addr := strings.TrimPrefix(e.URL, "http://")
	for _, head := range []string{
		"GET /hello-dep HTTP/1.1\nHost: " + addr + "\nConnection: close\n\n",
		"GET /hello-dep HTTP/1.1\r\nHost: " + addr + "\nConnection: close\r\n\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, head)
		c.SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang detector, not a speed check
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: no answer: %v", head, err)
		}
		b, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"hello-dep"`) {
			t.Fatalf("%q: %d %s", head, resp.StatusCode, b)
		}
	}
}

// FuzzResponseFraming: the net/http path's head check agrees with the
// fast path's parser (whatever the parser takes, the check takes, with the
// same status; whatever the check refuses, the parser refuses), and gives
// the same verdict however the stream is split into reads.
func FuzzResponseFraming(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), 7)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), 30)
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"), 20)
	f.Add([]byte("HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"), 3)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		if i := bytes.Index(b, crlfcrlf); i >= 0 {
			var h upstreamHead
			if parseResponse(b[:i+4], &h) == nil {
				status, err := checkResponseFraming(b[:i+4])
				if err != nil || status != h.status {
					t.Fatalf("%q: the parser takes it (%d), the check says %d %v", b[:i+4], h.status, status, err)
				}
			}
		}
		whole := &respTracker{}
		kWhole, doneWhole, errWhole := whole.feed(append([]byte(nil), b...))
		parts := &respTracker{}
		if split < 0 {
			split = -split
		}
		k := 0
		if len(b) > 0 {
			k = split % (len(b) + 1)
		}
		kParts, doneParts, errParts := parts.feed(append([]byte(nil), b[:k]...))
		if errParts == nil && !doneParts {
			var k2 int
			k2, doneParts, errParts = parts.feed(append([]byte(nil), b[k:]...))
			kParts += k2
		}
		if (errWhole == nil) != (errParts == nil) || doneWhole != doneParts || (doneWhole && kWhole != kParts) || whole.phase != parts.phase {
			t.Fatalf("%q split at %d: whole %v (end %v at %d), in two reads %v (end %v at %d)", b, k, errWhole, doneWhole, kWhole, errParts, doneParts, kParts)
		}
	})
}

// FuzzResponseEnd: where net/http reads a response (interim 1xx ones
// first) and its body to the end without error, the net/http path's
// tracker ends the response at the same byte, however the stream is split
// into reads; a body that runs to the close never ends early. The bytes
// that follow are the ones framingConn keeps from net/http.
func FuzzResponseEnd(f *testing.F) {
	f.Add([]byte("HTTP/1.1 304 Not Modified\r\nEtag: \"1\"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"), false, 9)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1"), false, 40)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), true, 3)
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\nextra"), false, 50)
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nx"), false, 1)
	f.Add([]byte("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), false, 1)
	f.Add([]byte("HTTP/1.1 200 OK\r\n\r\nto the close"), false, 1)
	f.Fuzz(func(t *testing.T, b []byte, head bool, split int) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		// net/http's reading, as http.Transport's readLoop does it.
		src := bytes.NewReader(b)
		br := bufio.NewReaderSize(src, 4096)
		req, _ := http.NewRequest(method, "http://upstream.test/", nil)
		var resp *http.Response
		var err error
		for {
			resp, err = http.ReadResponse(br, req)
			if err != nil || resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
				break
			}
		}
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
		}
		untilClose := err == nil && resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 &&
			method != http.MethodHead && resp.StatusCode != 204 && resp.StatusCode != 304
		consumed := len(b) - src.Len() - br.Buffered()

		tr := &respTracker{method: method}
		if split < 0 {
			split = -split
		}
		k := 0
		if len(b) > 0 {
			k = split % (len(b) + 1)
		}
		end, done, terr := tr.feed(append([]byte(nil), b[:k]...))
		if terr == nil && !done {
			var k2 int
			k2, done, terr = tr.feed(append([]byte(nil), b[k:]...))
			end += k2
		}
		switch {
		case err != nil:
			// net/http fails the exchange and drops the connection.
		case resp.StatusCode == http.StatusSwitchingProtocols || untilClose:
			if done {
				t.Fatalf("%q: net/http reads the body to the close, the tracker ends it at %d", b, end)
			}
		case terr != nil:
			// The head check refuses what net/http takes (errUpstreamFraming): 502.
		case !done || end != consumed:
			t.Fatalf("%q (split %d): net/http ends the response at %d, the tracker at %d (ended %v)", b, k, consumed, end, done)
		}
	})
}

// TestNetHTTPPathKeepsHTTP2Upstreams: the framing check wraps HTTP/1.x
// upstream connections only; an upstream that offers HTTP/2 over TLS is
// still spoken to in HTTP/2 by the net/http path, and HTTP/1.1 ones are
// checked over TLS too.
func TestNetHTTPPathKeepsHTTP2Upstreams(t *testing.T) {
	for _, h2 := range []bool{true, false} {
		reg := newRegistry(t, pkg{name: "hello-dep", version: "1.0.0"})
		var proto atomic.Value
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			proto.Store(r.Proto)
			reg.ServeHTTP(w, r)
		}))
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		t.Cleanup(srv.Close)
		e := newEdgeOn(t, netHTTPFront, func(c *Config) {
			c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(srv.URL)}}
			c.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		})
		resp, body := e.do(t, http.MethodGet, "/hello-dep", "", map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")})
		want := "HTTP/1.1"
		if h2 {
			want = "HTTP/2.0"
		}
		if resp.StatusCode != 200 || !strings.Contains(body, `"hello-dep"`) || proto.Load() != want {
			t.Fatalf("h2=%v: %d %s; upstream spoke %v, want %s", h2, resp.StatusCode, body, proto.Load(), want)
		}
	}
}

// TestEndlessInterimResponsesAre502: an upstream may send a few 1xx
// interim responses (103 Early Hints) before the final one, and the client
// gets the final one; an upstream that sends one after another is cut off
// after five, as net/http's client does, and answered 502 at once instead
// of holding the request (and a CPU) until the upstream timeout.
func TestEndlessInterimResponsesAre502(t *testing.T) {
	onBothFrontEnds(t, testEndlessInterimResponsesAre502)
}

func testEndlessInterimResponsesAre502(t *testing.T, fe frontEnd) {
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		n := 3
		if strings.HasPrefix(path, "/endless") {
			n = 10000
		}
		hint := strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n", n)
		body := `{"name":"late"}`
		fmt.Fprintf(c, "%sHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", hint, len(body), body)
	})
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
		c.BreakerFailures = -1
		c.Timeout = time.Minute // a 502 must not wait for it
	})
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	if resp, body := e.do(t, http.MethodGet, "/few", "", auth); resp.StatusCode != 200 || !strings.Contains(body, `"late"`) {
		t.Fatalf("three 103s then 200: %d %q", resp.StatusCode, body)
	}
	// The request is counted with its final status, not an interim one.
	testutil.Eventually(t, 5*time.Second, "the 200 counted", func() bool {
		return promtest.ToFloat64(e.proxy.requests.WithLabelValues("0xa1b2c3d4", "GET", "200", "upstream")) == 1
	})
	if n := promtest.ToFloat64(e.proxy.requests.WithLabelValues("0xa1b2c3d4", "GET", "103", "upstream")); n != 0 {
		t.Fatalf("%v requests counted as 103", n)
	}
	if resp, body := e.do(t, http.MethodGet, "/endless", "", auth); resp.StatusCode != http.StatusBadGateway || strings.Contains(body, `"late"`) {
		t.Fatalf("10,000 103s: %d %q, want 502", resp.StatusCode, body)
	}
}
