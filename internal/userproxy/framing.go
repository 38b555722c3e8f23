package userproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"
)

// Upstream framing on the net/http path. net/http's client takes a
// response with both Content-Length and Transfer-Encoding: chunked (it
// drops the length, RFC 9112 §6.3) and gives no way to see that it did;
// RFC 9112 says such a message "ought to be handled as an error", and the
// fast path answers it 502. So that both front ends agree, the connections
// the net/http path's transport dials are wrapped: when a request is given
// a connection (httptrace GotConn), the connection is armed, and the next
// response head read from it is checked before net/http sees any of it. A
// head with ambiguous or invalid framing fails the read: the round trip
// fails and the client gets 502.

// errUpstreamFraming: a response head with ambiguous or invalid framing.
var errUpstreamFraming = errors.New("upstream response framing is ambiguous or invalid (Content-Length with Transfer-Encoding, or a malformed Content-Length)")

// maxCheckedHead bounds the response head the check holds.
const maxCheckedHead = 64 << 10

// framingConn is an HTTP/1.x upstream connection whose response heads are
// checked as they are read.
type framingConn struct {
	net.Conn
	mu    sync.Mutex
	armed bool   // a response head is due
	head  []byte // what of it has been read
	err   error  // once failed, every read fails
}

// arm says a request is about to be written: the next bytes read start
// its response.
func (c *framingConn) arm() {
	c.mu.Lock()
	c.armed, c.head = true, c.head[:0]
	c.mu.Unlock()
}

func (c *framingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if c.armed {
			if ferr := c.scan(p[:n]); ferr != nil {
				c.err, n, err = ferr, 0, ferr
			}
		}
		c.mu.Unlock()
	}
	return n, err
}

// scan takes bytes of the response stream while a head is due.
func (c *framingConn) scan(b []byte) error {
	for len(b) > 0 && c.armed {
		before := len(c.head)
		c.head = append(c.head, b...)
		end := headEnd(c.head)
		if end < 0 {
			if len(c.head) > maxCheckedHead {
				return errUpstreamFraming
			}
			return nil
		}
		status, err := checkResponseFraming(c.head[:end])
		if err != nil {
			return err
		}
		b = b[end-before:] // what followed the head
		c.head = c.head[:0]
		// An interim response (100 Continue, 103) is followed by the
		// final one, whose head is checked too.
		c.armed = status >= 100 && status < 200 && status != http.StatusSwitchingProtocols
	}
	return nil
}

// headEnd is the length of the head at the start of b (the blank line
// included, CRLF or bare LF as net/http reads them), or -1.
func headEnd(b []byte) int {
	for i := bytes.IndexByte(b, '\n'); i >= 0; {
		j := i + 1
		if j < len(b) && b[j] == '\r' {
			j++
		}
		if j < len(b) && b[j] == '\n' {
			return j + 1
		}
		k := bytes.IndexByte(b[i+1:], '\n')
		if k < 0 {
			return -1
		}
		i += 1 + k
	}
	return -1
}

// checkResponseFraming reads a response head's status and rejects what
// the fast path's parser rejects about framing: Content-Length together
// with Transfer-Encoding, a Content-Length that is not plain digits, or
// several that differ.
func checkResponseFraming(head []byte) (int, error) {
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	status := 0
	if f := strings.Fields(lines[0]); len(f) >= 2 && len(f[1]) == 3 {
		for _, c := range []byte(f[1]) {
			if c < '0' || c > '9' {
				return 0, errUpstreamFraming
			}
			status = status*10 + int(c-'0')
		}
	} else {
		return 0, errUpstreamFraming
	}
	length, te := int64(-1), false
	for _, line := range lines[1:] {
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\r"), ":")
		if !ok {
			continue // net/http judges the rest
		}
		switch {
		case strings.EqualFold(name, "Content-Length"):
			n, ok := parseContentLength(trimOWS(value))
			if !ok || (length >= 0 && length != n) {
				return 0, errUpstreamFraming
			}
			length = n
		case strings.EqualFold(name, "Transfer-Encoding"):
			te = true
		}
	}
	if te && length >= 0 {
		return 0, errUpstreamFraming
	}
	return status, nil
}

// armFraming arms the connection a request gets, when it is one of ours.
func armFraming(r *http.Request) *http.Request {
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if fc, ok := info.Conn.(*framingConn); ok {
			fc.arm()
		}
	}}
	return r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
}

// framingDialers are a transport's dial functions that wrap HTTP/1.x
// connections in framingConn: plain TCP, and TLS when the upstream did not
// choose HTTP/2 (whose framing has no such ambiguity).
func framingDialers(tlsConf *tls.Config) (dial, dialTLS func(ctx context.Context, network, addr string) (net.Conn, error)) {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &framingConn{Conn: c}, nil
	}
	dialTLS = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conf := tlsConf.Clone()
		if conf.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			conf.ServerName = host
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the handshake's bound
		defer cancel()
		c, err := (&tls.Dialer{NetDialer: d, Config: conf}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := c.(*tls.Conn)
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return tc, nil // net/http must see the *tls.Conn to speak HTTP/2
		}
		return &framingConn{Conn: tc}, nil
	}
	return dial, dialTLS
}
