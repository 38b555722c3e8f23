package userproxy

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/regedge/regedge/internal/conncap"
)

// Connection caps (proxy.maxConnections, proxy.maxConnectionsPerIP): the
// proxy's listener counts open client connections, in total and per
// source address, from accept to close (a connection handed to net/http,
// or hijacked for a CONNECT tunnel, counts until it is closed). A
// connection over a cap is answered 503 with Connection: close and closed;
// it never reaches a handler. Each open connection costs memory (buffers,
// goroutines, TLS state), so without a cap idle connections are a way to
// exhaust the edge.

// maxRefusing bounds the connections being answered 503 at once; past it
// a refused connection is closed without an answer (under a flood, the
// answers must not become the cost).
const maxRefusing = 64

// refuseDeadline bounds each step of a 503: handshake (TLS) and the
// request head, then the answer and reading what else the client sent so
// that the close is not a reset.
const refuseDeadline = 2 * time.Second

// maxRefusedHead bounds what is read of a refused connection's request
// head before it is answered anyway.
const maxRefusedHead = 16 << 10

// capListener applies the caps to a listener's connections.
type capListener struct {
	net.Listener
	p        *Proxy
	max      int
	perIP    int
	tlsConf  *tls.Config // the answer to a refused connection goes over TLS
	refusing chan struct{}
	count    *conncap.Counter
}

// CapListener returns ln with the proxy's connection caps applied (ln
// itself when both are off). tlsConf, when set, is the listener's TLS
// config: refused connections are answered over TLS. Server.Serve applies
// it itself; an agent serving the proxy with net/http alone wraps its
// listener with it.
func (p *Proxy) CapListener(ln net.Listener, tlsConf *tls.Config) net.Listener {
	if p.cfg.MaxConnections <= 0 && p.cfg.MaxConnectionsPerIP <= 0 {
		return ln
	}
	if _, done := ln.(*capListener); done {
		return ln
	}
	l := &capListener{Listener: ln, p: p, max: p.cfg.MaxConnections, perIP: p.cfg.MaxConnectionsPerIP,
		refusing: make(chan struct{}, maxRefusing), count: conncap.New(p.cfg.MaxConnections, p.cfg.MaxConnectionsPerIP)}
	if tlsConf != nil {
		l.tlsConf = tlsConf.Clone()
		l.tlsConf.NextProtos = []string{"http/1.1"} // the 503 is HTTP/1.1
	}
	return l
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrPort(c.RemoteAddr()).Addr()
		if rule := l.count.Take(ip); rule != "" {
			l.p.connRefused.WithLabelValues(rule).Inc()
			l.refuse(c, rule)
			continue
		}
		return &cappedConn{Conn: c, l: l, ip: ip}, nil
	}
}

// refuse answers 503 and closes, in the background and bounded.
func (l *capListener) refuse(c net.Conn, rule string) {
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		c.SetDeadline(time.Now().Add(refuseDeadline))
		conn := c
		if l.tlsConf != nil {
			tc := tls.Server(c, l.tlsConf)
			if tc.Handshake() != nil {
				return
			}
			conn = tc
		}
		// The answer waits for the request: a client that reads what
		// arrives before it has asked (Go's http.Transport, now and
		// then) takes it for a broken connection, not for the 503. One
		// that asks nothing by the deadline is closed unanswered.
		if !readRequestHead(conn) {
			return
		}
		c.SetDeadline(time.Now().Add(refuseDeadline))
		limit := "proxy.maxConnections " + strconv.Itoa(l.max)
		if rule == conncap.PerIP {
			limit = "proxy.maxConnectionsPerIP " + strconv.Itoa(l.perIP)
		}
		body := jsonBody(apiError{Error: "Too many connections", Rule: limit})
		_, _ = io.WriteString(conn, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "+
			strconv.Itoa(len(body))+"\r\n\r\n"+string(body))
		// Half-close, then read what the client sent: closing with unread
		// data would reset the connection, and the answer with it.
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite() // the refusal is sent; the close is best effort
		}
		_, _ = io.CopyN(io.Discard, conn, 64<<10) // drain what the client sent, bounded, so the close is not a reset
	}()
}

// readRequestHead reads a request head (to its blank line, at most
// maxRefusedHead bytes); false if the client sent nothing.
func readRequestHead(c net.Conn) bool {
	head := make([]byte, 0, 4<<10)
	buf := make([]byte, 4<<10)
	for len(head) < maxRefusedHead {
		n, err := c.Read(buf)
		head = append(head, buf[:n]...)
		if headEnd(head) >= 0 {
			return true
		}
		if err != nil {
			return len(head) > 0 // part of a head, then a close or the deadline: answer what there is
		}
	}
	return true
}

// cappedConn releases its place when closed (once).
type cappedConn struct {
	net.Conn
	l    *capListener
	ip   netip.Addr
	once sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.count.Release(c.ip) })
	return err
}

// ReadFrom keeps sendfile(2) for cache hits on a plain connection.
func (c *cappedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite half-closes (CONNECT tunnels).
func (c *cappedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
