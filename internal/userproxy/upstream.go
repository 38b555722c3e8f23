package userproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// upstreamPool keeps idle HTTP/1.1 connections to one upstream for the
// fast path. The request's own goroutine writes the request and reads the
// response on the connection: no per-connection reader and writer
// goroutines and no channel hand-offs between them, which is most of what
// http.Transport costs per request on loopback (pprof, docs/benchmarks.md).
type upstreamPool struct {
	addr    string      // host:port to dial
	tlsConf *tls.Config // nil for plain HTTP
	maxIdle int
	idleFor time.Duration

	mu   sync.Mutex
	idle []*upConn // most recently used last
}

// upConn is one connection to an upstream with its buffers.
type upConn struct {
	net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time
	// bodyIdle > 0: each read of the body may wait this long for data
	// (deadlineConn), so a trickling upstream cannot hold a request.
	bodyIdle time.Duration
	records  *recordConn // under TLS (tlsrecord.go), nil for plain HTTP
}

const (
	// maxInterim bounds the 1xx interim responses before the final one, as
	// net/http's client does (5).
	maxInterim          = 5
	upstreamDialTimeout = 5 * time.Second
	upstreamIdleTimeout = 90 * time.Second
	upstreamMaxIdle     = 64
	upstreamReadBuffer  = 16 << 10 // response heads up to this size
)

func newUpstreamPool(addr string, tlsConf *tls.Config) *upstreamPool {
	return &upstreamPool{addr: addr, tlsConf: tlsConf, maxIdle: upstreamMaxIdle, idleFor: upstreamIdleTimeout}
}

// get returns an idle connection (reused true) or dials a new one.
func (u *upstreamPool) get(ctx context.Context) (c *upConn, reused bool, err error) {
	now := time.Now()
	u.mu.Lock()
	for len(u.idle) > 0 {
		c = u.idle[len(u.idle)-1]
		u.idle[len(u.idle)-1] = nil
		u.idle = u.idle[:len(u.idle)-1]
		if now.Sub(c.used) < u.idleFor {
			u.mu.Unlock()
			if c.quiet() {
				return c, true, nil
			}
			// Bytes nobody asked for (an extra response after a 304, a
			// late body) or the upstream's close: were this connection
			// reused, they would be read as the next request's answer.
			c.Close()
			u.mu.Lock()
			continue
		}
		c.Close()
	}
	u.mu.Unlock()
	c, err = u.dial(ctx)
	return c, false, err
}

func (u *upstreamPool) dial(ctx context.Context) (*upConn, error) {
	d := &net.Dialer{Timeout: upstreamDialTimeout, KeepAlive: 30 * time.Second}
	var conn net.Conn
	var records *recordConn
	var err error
	if u.tlsConf != nil {
		var tc *tls.Conn
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the handshake's bound
		tc, records, err = dialRecordTLS(hctx, d, "tcp", u.addr, u.tlsConf)
		cancel()
		conn = tc
	} else {
		conn, err = d.DialContext(ctx, "tcp", u.addr)
	}
	if err != nil {
		return nil, err
	}
	uc := &upConn{Conn: conn, records: records, bw: bufio.NewWriterSize(conn, 4<<10)}
	uc.br = bufio.NewReaderSize(&deadlineConn{Conn: conn, uc: uc}, upstreamReadBuffer)
	return uc, nil
}

// quiet reports whether an idle connection has nothing waiting to be read:
// nothing buffered (in br, or in the TLS layer: tlsrecord.go), and the
// socket, peeked without blocking, neither readable nor closed. For TLS
// the socket is the one under TLS: any record waiting there (data, or a
// close_notify) makes the connection unfit.
func (c *upConn) quiet() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	raw := c.Conn
	if tc, ok := raw.(*tls.Conn); ok {
		if tlsHolds(tc, c.records) {
			return false
		}
		raw = tc.NetConn()
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		quiet = n <= 0 && (rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK)
		return true // never wait for readability
	})
	return err == nil && quiet
}

// put returns a connection whose last response was read to its end.
func (u *upstreamPool) put(c *upConn) {
	c.used = time.Now()
	u.mu.Lock()
	if len(u.idle) < u.maxIdle {
		u.idle = append(u.idle, c)
		c = nil
	}
	u.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// closeIdle closes every idle connection.
func (u *upstreamPool) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle = nil
	u.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// exchange sends one request (a complete head, no body) and reads the
// response head into h, waiting at most timeout for it. A reused
// connection the upstream had closed meanwhile (nothing read back) is
// replaced by a new one once: the request never reached the upstream.
func (u *upstreamPool) exchange(ctx context.Context, req []byte, timeout time.Duration, h *upstreamHead) (*upConn, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := u.get(ctx)
		if err != nil {
			return nil, err
		}
		err = c.roundTrip(req, timeout, h)
		if err == nil {
			return c, nil
		}
		c.Close()
		if !reused || attempt > 0 || !staleConn(err) {
			return nil, err
		}
	}
}

func (c *upConn) roundTrip(req []byte, timeout time.Duration, h *upstreamHead) error {
	c.bodyIdle = 0 // the head has its own deadline
	if _, err := c.bw.Write(req); err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	for interim := 0; ; interim++ {
		if interim > maxInterim {
			return errBadUpstreamHead // an endless run of 1xx would hold the request until its timeout
		}
		head, err := peekHead(c.br)
		if err != nil {
			if errors.Is(err, errHeadTooLarge) || errors.Is(err, errBareLF) {
				return errBadUpstreamHead
			}
			return err
		}
		if err := parseResponse(head, h); err != nil {
			return err
		}
		_, _ = c.br.Discard(len(head)) // the head was peeked: it is buffered
		if h.status >= 200 || h.status == 101 {
			break
		}
		// 1xx interim responses (103 Early Hints) are not passed on.
	}
	c.SetReadDeadline(time.Time{})
	if h.status == 101 {
		return errBadUpstreamHead // nothing asked to switch protocols
	}
	return nil
}

// staleConn: the error of a reused connection the upstream had already
// closed (the request was not seen).
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
