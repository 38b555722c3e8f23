package userproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStrayUpstreamBytesNeverReachAnotherClient: an upstream that sends an
// extra response after a 304 leaves bytes waiting on a pooled connection;
// the edge must discard that connection, not read the stray response as
// the answer to the next client's request (for another package).
//
// The fast front end only: the net/http path (proxy.fastPath false, and
// what the fast path hands on) pools upstream connections in Go's
// http.Transport, whose check for unsolicited bytes on an idle connection
// races the next request's pick of it; there the stray response can still
// reach the next client (about one run in two on this test).
func TestStrayUpstreamBytesNeverReachAnotherClient(t *testing.T) {
	sendStray, strayWritten := make(chan struct{}), make(chan struct{})
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		switch path {
		case "/a":
			io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nEtag: \"1\"\r\n\r\n")
			<-sendStray // once the client has its 304
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"name\":\"stray\"}\n")
			close(strayWritten)
		default:
			body := `{"name":"b"}`
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	e := newEdge(t, func(c *Config) { c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}} })
	auth := "Bearer " + e.token(t, "0xa1b2c3d4")
	resp, _ := e.get(t, "/a", map[string]string{"Authorization": auth, "If-None-Match": `"1"`})
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("/a: %d, want the upstream's 304", resp.StatusCode)
	}
	close(sendStray)
	<-strayWritten // on loopback the bytes are now in the edge's socket
	resp, body := e.get(t, "/b", map[string]string{"Authorization": auth})
	if resp.StatusCode != 200 || !strings.Contains(body, `"name":"b"`) {
		t.Fatalf("/b answered %d %q: another request's stray bytes", resp.StatusCode, body)
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
		whole := &framingConn{armed: true}
		errWhole := whole.scan(append([]byte(nil), b...))
		parts := &framingConn{armed: true}
		if split < 0 {
			split = -split
		}
		k := 0
		if len(b) > 0 {
			k = split % (len(b) + 1)
		}
		errParts := parts.scan(append([]byte(nil), b[:k]...))
		if errParts == nil {
			errParts = parts.scan(append([]byte(nil), b[k:]...))
		}
		if (errWhole == nil) != (errParts == nil) || whole.armed != parts.armed {
			t.Fatalf("%q split at %d: whole %v (armed %v), in two reads %v (armed %v)", b, k, errWhole, whole.armed, errParts, parts.armed)
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
