package userproxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// holdConn is an upstream's TCP connection under its TLS layer whose
// writes can be held back and released at chosen points, so that a test
// decides how TLS records meet the TCP stream: two records in one
// segment, or one record split across segments.
type holdConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	held []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		h.held = append(h.held, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *holdConn) start() {
	h.mu.Lock()
	h.hold = true
	h.mu.Unlock()
}

// release writes what is held, but its last keep bytes, in one write;
// with keep 0 it stops holding.
func (h *holdConn) release(keep int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.held) - keep
	_, _ = h.Conn.Write(h.held[:n])
	h.held = append(h.held[:0], h.held[n:]...)
	h.hold = keep > 0
}

type holdListener struct{ net.Listener }

func (l holdListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &holdConn{Conn: c}, nil
}

// newHoldTLSFaultUpstream is newTLSFaultUpstream whose connections'
// handlers can reach the TCP connection under TLS (heldOf).
func newHoldTLSFaultUpstream(t *testing.T, handle func(path string, c net.Conn)) (*faultUpstream, *x509.CertPool) {
	t.Helper()
	return newTLSFaultUpstreamOn(t, func(ln net.Listener) net.Listener { return holdListener{ln} }, handle)
}

func heldOf(c net.Conn) *holdConn { return c.(*tls.Conn).NetConn().(*holdConn) }

// TestStrayTLSRecordsNeverReachAnotherClient: over TLS, the upstream's
// stray bytes (a second response after the one asked for) can reach the
// edge in the same TCP segment as the response's last record, so that
// the edge's TLS layer reads them from the socket along with it: a whole
// record of them, or the first part of one (the rest following later, as
// a record split by TCP does). Bytes the TLS layer holds are invisible to
// a peek at the socket; the edge must still see them and discard the
// connection, not read them as the next client's answer.
func TestStrayTLSRecordsNeverReachAnotherClient(t *testing.T) {
	onBothFrontEnds(t, testStrayTLSRecordsNeverReachAnotherClient)
}

func testStrayTLSRecordsNeverReachAnotherClient(t *testing.T, fe frontEnd) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"name\":\"stray\"}\n"
	const bodyA, bodyB = `{"name":"a"}`, `{"name":"b"}`
	answer := func(body string) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	for _, tc := range []struct {
		name string
		keep int // bytes of the stray record held until the next request
	}{
		{"a whole record in the response's segment", 0},
		{"part of a record in the response's segment", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, roots := newHoldTLSFaultUpstream(t, func(path string, c net.Conn) {
				h := heldOf(c)
				switch path {
				case "/a":
					h.start()
					io.WriteString(c, answer(bodyA)) // one record
					io.WriteString(c, stray)         // another
					h.release(tc.keep)
				default:
					h.release(0) // the rest of the stray record, if any
					io.WriteString(c, answer(bodyB))
				}
			})
			e := newEdgeOn(t, fe, func(c *Config) {
				c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
				c.RootCAs = roots
			})
			auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
			resp, got := e.get(t, "/a", auth)
			if resp.StatusCode != 200 || !strings.Contains(got, `"name":"a"`) {
				t.Fatalf("/a: %d %q", resp.StatusCode, got)
			}
			resp, got = e.get(t, "/b", auth)
			if resp.StatusCode != http.StatusOK || !strings.Contains(got, `"name":"b"`) {
				t.Fatalf("the next request answered %d %q: another request's stray bytes", resp.StatusCode, got)
			}
		})
	}
}
