package userproxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/testutil"
)

// dialFrom opens a connection to addr from a given loopback address.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAnswer reads one response (or the close) from c, waiting at most 10 s
// (a hang detector, not a speed check).
func readAnswer(t *testing.T, c net.Conn) (*http.Response, string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

// TestConnectionCaps: past proxy.maxConnectionsPerIP, and past
// proxy.maxConnections, a new connection is answered 503 naming the cap
// and closed; closing an open one makes room.
func TestConnectionCaps(t *testing.T) { onBothFrontEnds(t, testConnectionCaps) }

func testConnectionCaps(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, func(c *Config) { c.Tokens, c.MaxConnections, c.MaxConnectionsPerIP = nil, 3, 2 })
	addr := strings.TrimPrefix(e.URL, "http://")
	a1 := dialFrom(t, "127.0.0.1", addr)
	dialFrom(t, "127.0.0.1", addr)
	// The refusal answers the request, so the client asks first.
	asking := func(c net.Conn) net.Conn {
		io.WriteString(c, "GET /hello-dep HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
		return c
	}
	resp, body, err := readAnswer(t, asking(dialFrom(t, "127.0.0.1", addr)))
	if err != nil || resp.StatusCode != 503 || !strings.Contains(body, "proxy.maxConnectionsPerIP 2") || !resp.Close {
		t.Fatalf("third connection from one address: %v %v %s", err, resp, body)
	}
	dialFrom(t, "127.0.0.2", addr) // the third open connection
	resp, body, err = readAnswer(t, asking(dialFrom(t, "127.0.0.3", addr)))
	if err != nil || resp.StatusCode != 503 || !strings.Contains(body, "proxy.maxConnections 3") {
		t.Fatalf("fourth connection: %v %v %s", err, resp, body)
	}
	if promtest.ToFloat64(e.proxy.connRefused.WithLabelValues("per_ip")) != 1 || promtest.ToFloat64(e.proxy.connRefused.WithLabelValues("total")) != 1 {
		t.Fatal("regedge_proxy_connections_refused_total did not count the refusals")
	}
	// A connection over the cap that asks nothing is closed unanswered
	// (at the refusal's deadline).
	silent := dialFrom(t, "127.0.0.4", addr)
	silent.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang detector
	if b, err := io.ReadAll(silent); err != nil || len(b) != 0 {
		t.Fatalf("a silent connection over the cap: %q %v, want a close without an answer", b, err)
	}
	a1.Close()
	testutil.Eventually(t, 10*time.Second, "a closed connection to make room", func() bool {
		c := dialFrom(t, "127.0.0.1", addr)
		io.WriteString(c, "GET /hello-dep HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n")
		resp, _, err := readAnswer(t, c)
		c.Close()
		return err == nil && resp.StatusCode == 200
	})
}

// TestRefusedClientsDoNotKeepTheirConnection: after a 401 (and a 400) the
// connection is closed, on both front ends, instead of being kept alive
// for the idle timeout.
func TestRefusedClientsDoNotKeepTheirConnection(t *testing.T) {
	onBothFrontEnds(t, testRefusedClientsDoNotKeepTheirConnection)
}

func testRefusedClientsDoNotKeepTheirConnection(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, nil)
	addr := strings.TrimPrefix(e.URL, "http://")
	for _, head := range []string{
		"GET /hello-dep HTTP/1.1\r\nHost: " + addr + "\r\n\r\n",
		"GET /hello-dep HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer junk\r\n\r\n",
		"GET /hello-dep HTTP/1.1\r\nHost: a'b\r\n\r\n",
	} {
		c := dialFrom(t, "127.0.0.1", addr)
		io.WriteString(c, head)
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%v", err)
		}
		io.ReadAll(resp.Body)
		if !resp.Close {
			t.Errorf("%d without Connection: close", resp.StatusCode)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("after a %d the connection stayed open (%v)", resp.StatusCode, err)
		}
	}
}

// TestIdleTunnelsAreClosed: a CONNECT tunnel in which nothing moves is
// closed after the tunnel idle timeout; one that carries a request works.
func TestIdleTunnelsAreClosed(t *testing.T) { onBothFrontEnds(t, testIdleTunnelsAreClosed) }

func testIdleTunnelsAreClosed(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, func(c *Config) { c.TunnelIdle = 300 * time.Millisecond })
	routed := strings.TrimPrefix(e.reg.URL, "http://")
	c, resp := connect(t, e, routed, map[string]string{"Authorization": "Bearer " + e.tokenFor(t, "ci", "registry:write", "0xa1b2c3d4")})
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	io.WriteString(c, "GET /hello-dep HTTP/1.1\r\nHost: "+routed+"\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r, err := http.ReadResponse(br, nil)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("through the tunnel: %v %v", r, err)
	}
	io.ReadAll(r.Body)
	// Now nothing moves: the edge closes the tunnel (the upstream would
	// keep its side open).
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang detector
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("an idle tunnel stayed open: %v", err)
	}
}

// TestStalledRequestBodyIsCut: a client that stops sending its body half
// way is answered and cut after the body timeout, not held for ever.
func TestStalledRequestBodyIsCut(t *testing.T) { onBothFrontEnds(t, testStalledRequestBodyIsCut) }

func testStalledRequestBodyIsCut(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, func(c *Config) { c.BodyTimeout = 300 * time.Millisecond })
	tok := e.tokenFor(t, "release", "registry:write", "0xa1b2c3d4")
	addr := strings.TrimPrefix(e.URL, "http://")
	c := dialFrom(t, "127.0.0.1", addr)
	io.WriteString(c, "PUT /hello-dep HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer "+tok+"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"name\":")
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang detector
	b, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("a stalled body held the connection: %v (read %q)", err, b)
	}
}

// TestConnectionCapsOverTLS: on a TLS listener the 503 is answered over
// TLS (HTTP/1.1, even to a client that offers HTTP/2), so the client reads
// it instead of a broken handshake (speaking TLS itself, to see the
// negotiated protocol; TestConnectionCapsAnswerGoClients uses net/http).
func TestConnectionCapsOverTLS(t *testing.T) { onBothFrontEnds(t, testConnectionCapsOverTLS) }

func testConnectionCapsOverTLS(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, func(c *Config) { c.Tokens, c.MaxConnectionsPerIP = nil, 1 })
	base, pem := serveTLSFront(t, e.proxy, fe)
	addr := strings.TrimPrefix(base, "https://")
	hold := dialFrom(t, "127.0.0.1", addr) // holds the one place
	defer hold.Close()                     // before the shutdown: it is mid-handshake
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	for _, protos := range [][]string{{"http/1.1"}, {"h2", "http/1.1"}} {
		conf := &tls.Config{RootCAs: roots, ServerName: "edge.test", NextProtos: protos}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, conf)
		if err != nil {
			t.Fatalf("offering %v: handshake: %v", protos, err)
		}
		if p := c.ConnectionState().NegotiatedProtocol; p == "h2" {
			t.Errorf("offering %v: the refusal negotiated %s", protos, p)
		}
		io.WriteString(c, "GET /hello-dep HTTP/1.1\r\nHost: edge.test\r\n\r\n")
		resp, body, err := readAnswer(t, c)
		c.Close()
		if err != nil || resp.StatusCode != 503 || !strings.Contains(body, "proxy.maxConnectionsPerIP 1") {
			t.Fatalf("offering %v: %v %v %s", protos, err, resp, body)
		}
	}
}

// TestConnectionCapsAnswerGoClients: Go's http.Client over a cap, on plain
// TCP and TLS (offering HTTP/2), always reads the 503 and its Retry-After.
// The refusal waits for the request head: written before it, the answer
// reaches the client's idle read loop, which (now and then) takes it for
// a broken connection instead.
func TestConnectionCapsAnswerGoClients(t *testing.T) {
	onBothFrontEnds(t, testConnectionCapsAnswerGoClients)
}

func testConnectionCapsAnswerGoClients(t *testing.T, fe frontEnd) {
	for _, overTLS := range []bool{false, true} {
		e := newEdgeOn(t, fe, func(c *Config) { c.Tokens, c.MaxConnectionsPerIP = nil, 1 })
		base, client := e.URL, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		if overTLS {
			var pem []byte
			base, pem = serveTLSFront(t, e.proxy, fe)
			client = testutil.TLSClient(pem, true) // edge.test's certificate also names 127.0.0.1
			client.Timeout = 10 * time.Second
		}
		hold := dialFrom(t, "127.0.0.1", base[strings.Index(base, "//")+2:]) // holds the one place
		for i := 0; i < 5; i++ {
			resp, err := client.Get(base + "/hello-dep")
			if err != nil {
				t.Fatalf("TLS %v, request %d: %v, want the 503", overTLS, i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(b), "proxy.maxConnectionsPerIP 1") {
				t.Fatalf("TLS %v, request %d: %d Retry-After %q %s", overTLS, i, resp.StatusCode, resp.Header.Get("Retry-After"), b)
			}
		}
		hold.Close()
	}
}
