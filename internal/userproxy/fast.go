package userproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/regedge/regedge/internal/codec"
)

// Server is the proxy's front end, on plain HTTP or TLS. It serves the
// requests that make up nearly all registry traffic (GET and HEAD of
// packuments and tarballs) on a lean HTTP/1.1 path: its own head parser,
// pooled buffers, and an upstream connection pool the request's goroutine
// drives itself; with the edge cache on, the cache code answers them
// (bridge.go). Every other connection (CONNECT, PUT, bodies, upgrades,
// HTTP/2, anything the narrow parser does not take) is handed, unread, to
// Fallback, a net/http server with Proxy as handler. Both paths run the
// same checks (Proxy.admit).
type Server struct {
	Proxy *Proxy
	// Fallback serves the connections the fast path hands on; its
	// Handler is normally Proxy. Its timeouts apply to those connections.
	Fallback *http.Server
	// HeaderTimeout bounds the time to read a request head (slowloris;
	// default 10 s); IdleTimeout the wait for the next request on a
	// kept-alive connection (default 2 minutes).
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration
	// TLSConfig, when set, serves HTTPS: HTTP/1.1 on the fast path,
	// HTTP/2 (by ALPN) handed to Fallback. Certificates come from it on
	// each handshake (CertReloader).
	TLSConfig *tls.Config
	tlsConf   *tls.Config // TLSConfig with the ALPN protocols

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*fastConn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
	handoff *handoffListener
}

type fastConn struct {
	net.Conn             // the socket
	idle     atomic.Bool // waiting for a request (Shutdown wakes these)
}

// fastReadBuffer is the per-connection read buffer: request heads larger
// than this go to net/http (whose limit is MaxHeaderBytes).
const fastReadBuffer = 8 << 10

var (
	fastReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, fastReadBuffer) }}
	fastWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
	fastScratch = sync.Pool{New: func() any { return &scratch{} }}
)

// scratch is a connection's reusable memory, request after request.
type scratch struct {
	req  fastRequest
	resp upstreamHead
	out  []byte // the upstream request head
	w    plainWriter
}

// plainWriter hides the connection's ReadFrom from bufio.Writer, which
// would otherwise hand big bodies to net's generic copy (a new 32 KiB
// buffer each time).
type plainWriter struct{ io.Writer }

// Serve accepts connections on ln until Shutdown; it returns
// http.ErrServerClosed after Shutdown, else the listener's error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() { // Shutdown came first
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	ln = s.Proxy.CapListener(ln, s.TLSConfig) // proxy.maxConnections, maxConnectionsPerIP
	s.ln = ln
	s.conns = map[*fastConn]struct{}{}
	if s.HeaderTimeout <= 0 {
		s.HeaderTimeout = 10 * time.Second
	}
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 2 * time.Minute
	}
	if s.TLSConfig != nil {
		s.tlsConf = s.TLSConfig.Clone()
		s.tlsConf.NextProtos = []string{"h2", "http/1.1"}
	}
	s.handoff = newHandoffListener(ln.Addr())
	s.mu.Unlock()
	fallbackDone := make(chan error, 1)
	go func() { fallbackDone <- s.Fallback.Serve(s.handoff) }()
	var err error
	backoff := time.Duration(0)
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			if s.closing.Load() || !acceptRetryable(err) {
				break
			}
			// Out of file descriptors or an aborted handshake: wait and
			// go on, as net/http does, rather than stop serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		fc := &fastConn{Conn: c}
		if !s.add(fc) {
			c.Close()
			break
		}
		go s.serveConn(fc)
	}
	if s.closing.Load() {
		return http.ErrServerClosed
	}
	_ = s.handoff.Close() // never fails
	// The handoff listener is closed: net/http's Serve returns
	// net.ErrClosed, which says nothing the accept error does not.
	if ferr := <-fallbackDone; ferr != nil && !errors.Is(ferr, net.ErrClosed) && !errors.Is(ferr, http.ErrServerClosed) {
		err = errors.Join(err, ferr)
	}
	return err
}

// acceptRetryable: accept errors that pass (descriptor limits, a
// connection reset before it was accepted, deadlines).
func acceptRetryable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// add registers a new connection (idle) for serveConn; false once
// shutting down. The WaitGroup is added to under the lock Shutdown takes
// before it waits, so no Add races the Wait.
func (s *Server) add(c *fastConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) forget(c *fastConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish (their connections close after the response) and waits
// for them until ctx is done; then it closes what is left. Connections
// handed to net/http are shut down by Fallback.Shutdown, run alongside.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	s.Proxy.draining.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		if c.idle.Load() {
			c.SetReadDeadline(time.Now()) // wakes the wait for a head
		}
	}
	s.mu.Unlock()
	fallbackErr := make(chan error, 1)
	go func() { fallbackErr <- s.Fallback.Shutdown(ctx) }()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			s.Proxy.shutdownCut.Inc()
			c.Close()
		}
		s.mu.Unlock()
		err = ctx.Err()
	}
	for _, r := range s.Proxy.routes {
		if r.pool != nil {
			r.pool.closeIdle()
		}
	}
	return errors.Join(err, <-fallbackErr)
}

// serveConn serves requests on one connection while the fast path takes
// them, then closes it or hands it on. c.Conn is the socket (Shutdown
// uses it); conn is what requests are read from: the socket, or TLS over it.
func (s *Server) serveConn(c *fastConn) {
	defer s.wg.Done()
	conn := c.Conn
	if s.TLSConfig != nil {
		tc, h2 := s.handshake(c.Conn)
		if tc == nil {
			s.forget(c)
			c.Close()
			return
		}
		if h2 { // HTTP/2 is net/http's: the TLS connection goes as it is
			s.forget(c)
			s.Proxy.handedOn.Inc()
			s.handoff.give(tc)
			return
		}
		conn = tc
	}
	br := fastReaders.Get().(*bufio.Reader)
	br.Reset(conn)
	sc := fastScratch.Get().(*scratch)
	defer fastScratch.Put(sc)
	remote, local := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	cs := &connState{sock: socketOf(c.Conn)}
	if tc, ok := conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cs.tls = &st
	}
	first := true
	for {
		c.idle.Store(true)
		wait := s.IdleTimeout
		if first {
			wait = s.HeaderTimeout
		}
		c.SetReadDeadline(time.Now().Add(wait))
		// Shutdown sets closing, then wakes idle connections with a past
		// deadline: checked after our own deadline, so it cannot be lost.
		if s.closing.Load() {
			break
		}
		if !first {
			// Wait for the next request's first byte, then for its head.
			if _, err := br.Peek(1); err != nil {
				break
			}
			c.SetReadDeadline(time.Now().Add(s.HeaderTimeout))
		}
		first = false
		head, err := peekHead(br)
		if errors.Is(err, errHeadTooLarge) || errors.Is(err, errBareLF) {
			s.handOn(c, conn, br)
			return
		}
		c.idle.Store(false)
		if err != nil || s.closing.Load() {
			break
		}
		req := &sc.req
		if !s.Proxy.fastEligible() || !parseRequest(head, req) {
			s.handOn(c, conn, br)
			return
		}
		_, _ = br.Discard(len(head)) // the head was peeked: it is buffered
		req.remote, req.local, req.cs = remote, local, cs
		if !s.Proxy.serveFast(conn, req, sc, s.closing.Load()) || req.close || s.closing.Load() {
			break
		}
	}
	s.forget(c)
	conn.Close()
	br.Reset(nil)
	fastReaders.Put(br)
}

// handshake runs the TLS handshake within HeaderTimeout; nil when it
// failed, h2 when the client chose HTTP/2.
func (s *Server) handshake(raw net.Conn) (tc *tls.Conn, h2 bool) {
	tc = tls.Server(raw, s.tlsConf)
	raw.SetDeadline(time.Now().Add(s.HeaderTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, false
	}
	raw.SetDeadline(time.Time{})
	return tc, tc.ConnectionState().NegotiatedProtocol == "h2"
}

// handOn gives the connection, with whatever the fast path peeked at, to
// net/http.
func (s *Server) handOn(c *fastConn, conn net.Conn, br *bufio.Reader) {
	s.forget(c)
	s.Proxy.handedOn.Inc()
	c.SetReadDeadline(time.Time{})
	s.handoff.give(&handedConn{Conn: conn, r: br})
}

// addrPort is a connection address as net/http's RemoteAddr string would
// parse: IPv4 unmapped.
func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// handedConn replays the bytes the fast path buffered before the rest of
// the connection.
type handedConn struct {
	net.Conn
	r *bufio.Reader
}

func (h *handedConn) Read(p []byte) (int, error) { return h.r.Read(p) }

// CloseWrite half-closes the connection (CONNECT tunnels use it).
func (h *handedConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// handoffListener is the listener net/http serves the handed connections
// from.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) give(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// fastEligible: a custom transport (tests) is net/http's alone; with the
// edge cache on, the fast path parses and checks and the cache code serves
// (bridge.go).
func (p *Proxy) fastEligible() bool { return p.cfg.Transport == nil }

// serveFast runs the checks and forwards one request; false means the
// connection must close (the response could not be completed).
func (p *Proxy) serveFast(c net.Conn, req *fastRequest, sc *scratch, closing bool) bool {
	start := time.Now()
	bw := fastWriters.Get().(*bufio.Writer)
	sc.w.Writer = c
	bw.Reset(&sc.w)
	defer func() { bw.Reset(nil); fastWriters.Put(bw) }()
	reqID, _ := req.header(codec.HeaderRequestID)
	if !codec.ValidRequestID(reqID) {
		reqID = codec.NewRequestID()
	}
	closeConn := req.close || closing
	if req.path == SelfProbePath {
		return answerSelfProbe(bw, req.method, closeConn)
	}
	code, upstream, written := 0, "", int64(0)
	acc := &accessInfo{client: req.remote.Addr()}
	v := p.admit(req)
	defer func() {
		p.finished(start, reqID, v.hash, req.method, req.path, code, written, upstream, v.tokenResult, acc)
	}()
	if v.code != 0 {
		code, acc.reason = v.code, refusalReason(&v)
		closeConn = closeConn || closesConnection(v.code)
		written = writeRefusal(bw, req.method, v.code, v.refusal, v.retryAfter, reqID, closeConn)
		return bw.Flush() == nil && !closeConn
	}
	up := v.route
	upstream = up.URL.Host
	if p.cfg.Cache != nil {
		if kind := classify(req.path); kind != bypass {
			var ok bool
			code, written, ok = p.serveCacheable(c, bw, req, &v, reqID, closeConn, kind, acc)
			return ok && bw.Flush() == nil
		}
		acc.cache = "bypass"
	}
	sc.out = p.appendUpstreamRequest(sc.out[:0], req, up, v.state, reqID, upstreamReqOpts{gzip: req.gzipOK})
	h := &sc.resp
	uc, err := p.exchangeFast(up, sc.out, h)
	if err != nil {
		res := p.refuseUpstream(bw, req, err, reqID, closeConn, acc)
		code, written = res.code, res.n
		return bw.Flush() == nil
	}
	o := streamOpts{cacheState: acc.cache, bodyIdle: p.cfg.BodyTimeout}
	if isPackumentResponse(req.method, req.path, h) {
		o.rewrite = &rebaser{origins: up.origins, edge: p.edgeBaseOf(req, req.host, req.cs.tls != nil)}
		o.learn = func(path, integrity string) { p.integrity.put(up.Hash, path, integrity) }
	}
	res := p.stream(bw, req, up, uc, h, reqID, closeConn, o)
	code, written = res.code, res.n
	return res.ok && bw.Flush() == nil
}

// upstreamReqOpts are the choices of one upstream request head.
type upstreamReqOpts struct {
	gzip            bool     // ask for gzip
	skipConditional bool     // drop the client's If-None-Match / If-Modified-Since
	extra           []string // more headers, name and value pairs
}

// appendUpstreamRequest appends the upstream request head: the client's
// end-to-end headers, then the verdict's config headers, the request ID
// and the edge's credential (never the client's).
func (p *Proxy) appendUpstreamRequest(out []byte, req *fastRequest, up *route, st codec.State, reqID string, o upstreamReqOpts) []byte {
	out = append(out, req.method...)
	out = append(out, ' ')
	out = append(out, up.prefix...)
	out = append(out, req.target...)
	out = append(out, " HTTP/1.1\r\nHost: "...)
	out = append(out, up.hostHeader...)
	out = append(out, "\r\n"...)
	for i := 0; i < req.n; i++ {
		if inList(req.names[i], fastForwardSkip) {
			continue
		}
		if o.skipConditional && (strings.EqualFold(req.names[i], "If-None-Match") || strings.EqualFold(req.names[i], "If-Modified-Since")) {
			continue
		}
		out = append(out, req.names[i]...)
		out = append(out, ": "...)
		out = append(out, req.values[i]...)
		out = append(out, "\r\n"...)
	}
	out = p.headerBlock(st).AppendWire(out)
	out = append(out, codec.HeaderRequestID+": "...)
	out = append(out, reqID...)
	out = append(out, "\r\n"...)
	if up.AuthToken != "" {
		out = append(out, "Authorization: Bearer "...)
		out = append(out, up.AuthToken...)
		out = append(out, "\r\n"...)
	}
	for i := 0; i+1 < len(o.extra); i += 2 {
		out = append(out, o.extra[i]...)
		out = append(out, ": "...)
		out = append(out, o.extra[i+1]...)
		out = append(out, "\r\n"...)
	}
	if o.gzip {
		out = append(out, "Accept-Encoding: gzip\r\n"...)
	}
	return append(out, "\r\n"...)
}

// exchangeFast is roundTrip for the fast path: the breaker, the retry
// budget (a failed dial of an idempotent request is retried once while the
// budget lasts), the upstream's timeout.
func (p *Proxy) exchangeFast(up *route, out []byte, h *upstreamHead) (*upConn, error) {
	if ok, wait := up.br.allow(); !ok {
		return nil, &circuitOpen{wait}
	}
	p.budget.deposit()
	ctx := context.Background()
	began := time.Now()
	uc, err := up.pool.exchange(ctx, out, up.timeout, h)
	if err != nil && dialFailed(err) && p.budget.spend() {
		uc, err = up.pool.exchange(ctx, out, up.timeout, h)
	}
	p.upstreamDone(up, began, err) // a 5xx is an answer: it never opens the breaker
	return uc, err
}

// dialFailed: the request never reached the upstream (a timeout is not
// counted: the upstream may be working on it).
func dialFailed(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// answerCode is the status of a failed round trip: 504 timed out, else 502.
func answerCode(err error) int {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// upstreamRefusal is the body and Retry-After (seconds) of a failed round
// trip, on either front end.
func upstreamRefusal(err error) (apiError, int) {
	var co *circuitOpen
	if errors.As(err, &co) {
		return apiError{Error: "Upstream unreachable", Reason: "circuit open"}, int(co.wait.Seconds()) + 1
	}
	if answerCode(err) == http.StatusGatewayTimeout {
		return apiError{Error: "Upstream timed out"}, 5
	}
	return apiError{Error: "Upstream unreachable"}, 5
}

// finishUpstream returns a connection whose response was read to the end
// to the pool, or closes it.
func (p *Proxy) finishUpstream(up *route, uc *upConn, h *upstreamHead) {
	if h.close || uc.br.Buffered() > 0 {
		uc.Close()
		return
	}
	up.pool.put(uc)
}

// skipTrailers reads the trailer section after a chunked body.
func skipTrailers(br *bufio.Reader) bool {
	for i := 0; i < 64; i++ {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false
		}
		if len(line) <= 2 && bytes.Equal(bytes.TrimRight(line, "\r\n"), nil) {
			return true
		}
	}
	return false
}

// connectionListed: name is one of the Connection header's tokens.
func connectionListed(conn, name string) bool {
	for conn != "" {
		var tok string
		tok, conn, _ = strings.Cut(conn, ",")
		if strings.EqualFold(trimOWS(tok), name) {
			return true
		}
	}
	return false
}

// writeStatusLine writes "HTTP/1.1 code text".
func writeStatusLine(bw *bufio.Writer, code int) {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteString(" ")
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
}

// writeRefusal writes a JSON refusal as writeJSON does (no body for HEAD);
// it returns the body's size.
func writeRefusal(bw *bufio.Writer, method string, code int, e apiError, retryAfter int, reqID string, closeConn bool) int64 {
	body := jsonBody(e)
	writeStatusLine(bw, code)
	bw.WriteString("Content-Type: application/json\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(body)))
	bw.WriteString("\r\n" + codec.HeaderRequestID + ": ")
	bw.WriteString(reqID)
	bw.WriteString("\r\n")
	if retryAfter > 0 {
		bw.WriteString("Retry-After: ")
		bw.WriteString(strconv.Itoa(retryAfter))
		bw.WriteString("\r\n")
	}
	if closeConn {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if method == "HEAD" {
		return 0
	}
	bw.Write(body)
	return int64(len(body))
}
