package userproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
//
// The wrapper also keeps the connection's request/response turn, so that
// bytes the upstream sends unasked (a second response after a 304, bytes
// past a Content-Length) are never read as the next request's answer.
// http.Transport reads an idle connection and only afterwards checks
// whether a response was expected, which races the next request's pick of
// that connection. Here the response's end is found in the stream itself
// (its head's framing, then Content-Length or chunked framing), so the
// wrapper knows a connection is idle the moment the last byte of the
// response is read, before net/http can hand it to another request:
//
//   - bytes read together with the end of a response, past it, fail the
//     connection at once (they never reach net/http);
//   - over TLS, at the response's end the TLS layer is asked (without
//     waiting) for anything it holds past it: plaintext, a record, or part
//     of one; recordConn (tlsrecord.go) keeps it from reading the socket
//     past the record it needs, so the rest stays where a peek sees it;
//   - while idle, a read does not consume: it waits until the socket is
//     readable (a MSG_PEEK, on the socket under TLS for TLS) and then, if
//     still no request has been written, fails (the transport closes the
//     connection, or the request that took it meanwhile fails before
//     writing anything and net/http retries it on another connection);
//   - the first write of a request on a reused connection peeks the socket
//     first: anything waiting fails the write with nothing written
//     (net/http retries body-less requests; breakerTransport retries the
//     others when their body was not read yet, see gatedBody).
//
// What remains: bytes that arrive after that peek, while or after the
// request is written, cannot be told apart from its response (HTTP/1.1
// responses carry no request id); the fast path's pool has the same
// window. And on a connection's first request the check does not apply
// (a TLS 1.3 server's session tickets arrive unasked after the handshake;
// nothing of an earlier exchange can be waiting on a new connection).

// errUpstreamFraming: a response head with ambiguous or invalid framing.
var errUpstreamFraming = errors.New("upstream response framing is ambiguous or invalid (Content-Length with Transfer-Encoding, or a malformed Content-Length)")

// errUnfitConn: an upstream connection that must not carry a request;
// nothing of the request was sent on it (so it may be sent again).
var errUnfitConn = errors.New("upstream connection unfit for a request")

var (
	// errStrayBytes: the upstream sent bytes no request asked for.
	errStrayBytes = fmt.Errorf("%w: the upstream sent bytes no request asked for", errUnfitConn)
	// errClosedIdle: the upstream closed the connection while it was idle.
	errClosedIdle = fmt.Errorf("%w: closed by the upstream while idle", errUnfitConn)
)

// maxCheckedHead bounds the response head the check holds.
const maxCheckedHead = 64 << 10

// turn is where a connection is in its request/response exchange.
type turn uint8

const (
	turnNew   turn = iota // dialed, no request written yet
	turnArmed             // a request has the connection, nothing of it written
	turnSent              // the request is being written: what arrives is its response
	turnIdle              // the response ended; nothing is due
)

// framingConn is an HTTP/1.x upstream connection whose response heads are
// checked, and whose responses are delimited, as they are read.
type framingConn struct {
	net.Conn
	raw     syscall.RawConn // the socket (under TLS), for peeking; nil if none
	tls     *tls.Conn       // the TLS layer, nil for plain TCP
	records *recordConn     // under tls (tlsrecord.go), nil if none

	mu     sync.Mutex
	turn   turn
	reused bool        // a response ended on it: what waits is stray
	method string      // of the request that has the connection
	resp   respTracker // the response being read
	err    error       // once failed, every read and write fails
}

func newFramingConn(c net.Conn, records *recordConn) *framingConn {
	fc := &framingConn{Conn: c, records: records}
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		fc.tls, raw = tc, tc.NetConn()
	}
	if sc, ok := raw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			fc.raw = rc
		}
	}
	return fc
}

// arm says a request (of this method) has the connection: the next bytes
// read start its response.
func (c *framingConn) arm(method string) {
	c.mu.Lock()
	if c.err == nil {
		c.turn, c.method = turnArmed, method
	}
	c.mu.Unlock()
}

// fitForBody is asked before a request's body is first read: a reused
// connection with bytes waiting fails now, before any of the body is
// taken (so the request can be sent again elsewhere).
func (c *framingConn) fitForBody() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && c.turn == turnArmed && c.reused && c.pending() {
		c.err = errStrayBytes
	}
	return c.err
}

func (c *framingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	// After turnIdle, until the next arm, what is written is the tail of
	// a body whose response has already ended (an upstream may answer
	// before the body is sent; http.Transport sends it anyway to keep
	// the connection): the connection stays idle.
	if c.err == nil && (c.turn == turnNew || c.turn == turnArmed) {
		// The request's first bytes: whatever waits on a reused
		// connection now was sent before the upstream saw the request.
		if c.reused && c.pending() {
			c.err = errStrayBytes
		} else {
			c.turn, c.resp = turnSent, respTracker{method: c.method, buf: c.resp.buf[:0]} // the buffer is kept: no allocation per request
			c.method = ""
		}
	}
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *framingConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		err, t, waitFirst := c.err, c.turn, c.reused && c.raw != nil
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if t == turnSent || !waitFirst {
			break
		}
		// Idle, or a request has the connection but has written
		// nothing: wait for bytes without taking them.
		eof, err := c.waitReadable()
		if err != nil {
			return 0, err
		}
		c.mu.Lock()
		if c.err == nil && c.turn != turnSent {
			c.err = errStrayBytes
			if eof {
				c.err = errClosedIdle
			}
		}
		c.mu.Unlock()
	}
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	c.mu.Lock()
	if c.err != nil { // failed meanwhile (a write's peek)
		c.mu.Unlock()
		return 0, c.err
	}
	if c.turn != turnSent {
		// A new connection's bytes before any request was written.
		c.err = errStrayBytes
		c.mu.Unlock()
		return 0, c.err
	}
	k, done, ferr := c.resp.feed(p[:n])
	switch {
	case ferr != nil:
		c.err, n, err = ferr, 0, ferr
	case done:
		c.turn, c.reused = turnIdle, true
		if k < n {
			// Bytes past the response's end: not net/http's to see.
			c.err, n = errStrayBytes, k
		}
	}
	probe := done && c.err == nil && c.tls != nil
	c.mu.Unlock()
	if probe && tlsHolds(c.tls, c.records) {
		c.mu.Lock()
		if c.err == nil {
			c.err = errStrayBytes
		}
		c.mu.Unlock()
	}
	return n, err
}

// pending reports, without blocking, whether the socket has anything to
// read (bytes or the upstream's close) or cannot be peeked.
func (c *framingConn) pending() bool {
	if c.records != nil && c.records.midRecord() {
		return true // part of a record nobody asked for (tlsrecord.go)
	}
	if c.raw == nil {
		return false
	}
	waiting := true
	var b [1]byte
	// Control, not Read: the read loop may be waiting in waitReadable,
	// which holds the descriptor's read lock until bytes come.
	err := c.raw.Control(func(fd uintptr) {
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		waiting = rerr != syscall.EAGAIN && rerr != syscall.EWOULDBLOCK
	})
	return err != nil || waiting
}

// waitReadable waits until the socket has something to read, without
// reading it; eof is the upstream's close.
func (c *framingConn) waitReadable() (eof bool, err error) {
	var b [1]byte
	err = c.raw.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK || rerr == syscall.EINTR {
			return false // wait for readability and peek again
		}
		eof = n == 0 && rerr == nil
		return true
	})
	return eof, err
}

// respPhase is where a respTracker is in a response.
type respPhase uint8

const (
	phaseHead       respPhase = iota // reading a head
	phaseLength                      // Content-Length body bytes
	phaseChunkLine                   // a chunk-size line
	phaseChunkData                   // chunk data
	phaseChunkEnd                    // the CRLF after chunk data
	phaseTrailer                     // trailer lines after the last chunk
	phaseUntilClose                  // no end but the connection's (or net/http refuses it)
	phaseDone
)

// maxChunkLine is net/http's bound on a chunk-size line; maxTrailer bounds
// what is held of a trailer line.
const (
	maxChunkLine = 4096
	maxTrailer   = 64 << 10
)

// respTracker finds where a response ends in the bytes read, as net/http
// reads them (RFC 9112 §6.3): interim 1xx heads, then the final head;
// no body for HEAD, 204 and 304; else chunked or Content-Length; else the
// body runs to the close (and the connection is never reused). Where
// net/http would refuse the framing, the tracker never ends the response:
// net/http fails the exchange and drops the connection itself.
type respTracker struct {
	method string
	phase  respPhase
	buf    []byte // the head, chunk-size line or trailer line so far
	left   uint64 // of the Content-Length body or the chunk
}

// feed takes the next bytes of the stream; k of them belong to the
// response, done says it ended there.
func (t *respTracker) feed(b []byte) (k int, done bool, err error) {
	for k < len(b) && t.phase != phaseDone {
		switch t.phase {
		case phaseHead:
			before := len(t.buf)
			t.buf = append(t.buf, b[k:]...)
			end := headEnd(t.buf)
			if end < 0 {
				if len(t.buf) > maxCheckedHead {
					return k, false, errUpstreamFraming
				}
				return len(b), false, nil
			}
			f, err := responseFraming(t.buf[:end])
			if err != nil {
				return k, false, err
			}
			k += end - before
			t.buf = t.buf[:0]
			t.body(f)
		case phaseLength, phaseChunkData:
			n := uint64(len(b) - k)
			if n > t.left {
				n = t.left
			}
			k += int(n)
			if t.left -= n; t.left == 0 {
				if t.phase == phaseLength {
					t.phase = phaseDone
				} else {
					t.phase = phaseChunkEnd
				}
			}
		case phaseChunkLine, phaseChunkEnd, phaseTrailer:
			i := bytes.IndexByte(b[k:], '\n')
			if i < 0 {
				t.buf = append(t.buf, b[k:]...)
				k = len(b)
				if len(t.buf) > maxTrailer {
					t.phase = phaseUntilClose
				}
				continue
			}
			t.buf = append(t.buf, b[k:k+i+1]...)
			k += i + 1
			t.line()
			t.buf = t.buf[:0]
		case phaseUntilClose:
			k = len(b)
		}
	}
	return k, t.phase == phaseDone, nil
}

// body sets the phase after a head.
func (t *respTracker) body(f respFraming) {
	switch {
	case f.status >= 100 && f.status < 200 && f.status != http.StatusSwitchingProtocols:
		t.phase = phaseHead // an interim response: the final one follows
	case f.status == http.StatusSwitchingProtocols:
		t.phase = phaseUntilClose
	case t.method == http.MethodHead || f.status == http.StatusNoContent || f.status == http.StatusNotModified:
		t.phase = phaseDone
	case f.te > 0:
		t.phase = phaseChunkLine
		if f.te > 1 {
			t.phase = phaseUntilClose // net/http refuses it
		}
	case f.length == 0:
		t.phase = phaseDone
	case f.length > 0:
		t.phase, t.left = phaseLength, uint64(f.length)
	default:
		t.phase = phaseUntilClose
	}
}

// line takes one complete line (in t.buf, LF included) of the chunked
// framing, as net/http's chunked reader and trailer reader judge it.
func (t *respTracker) line() {
	l := t.buf
	switch t.phase {
	case phaseChunkEnd:
		if string(l) != "\r\n" { // the chunk's data ran past its size
			t.phase = phaseUntilClose
			return
		}
		t.phase = phaseChunkLine
	case phaseChunkLine:
		// CRLF, and no other CR; no longer than net/http's line bound.
		if len(l) < 2 || l[len(l)-2] != '\r' || bytes.IndexByte(l, '\r') != len(l)-2 || len(l)-2 >= maxChunkLine {
			t.phase = phaseUntilClose
			return
		}
		l = l[:len(l)-2]
		for len(l) > 0 && (l[len(l)-1] == ' ' || l[len(l)-1] == '\t') {
			l = l[:len(l)-1]
		}
		l, _, _ = bytes.Cut(l, []byte(";"))
		size, ok := parseChunkSize(l)
		switch {
		case !ok:
			t.phase = phaseUntilClose
		case size == 0:
			t.phase = phaseTrailer
		default:
			t.phase, t.left = phaseChunkData, size
		}
	case phaseTrailer:
		if string(l) == "\n" || string(l) == "\r\n" {
			t.phase = phaseDone
		}
	}
}

// parseChunkSize reads a chunk size as net/http does: 1 to 16 hex digits.
func parseChunkSize(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | uint64(c)
	}
	return n, true
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

// respFraming is what a response head says about its body's framing.
type respFraming struct {
	status int
	length int64 // Content-Length, -1 without
	te     int   // 0 none (or HTTP/1.0, where net/http ignores it), 1 "chunked", 2 anything net/http refuses
}

// checkResponseFraming reads a response head's status and rejects what
// the fast path's parser rejects about framing.
func checkResponseFraming(head []byte) (int, error) {
	f, err := responseFraming(head)
	return f.status, err
}

// responseFraming reads a response head's status and body framing, and
// rejects what the fast path's parser rejects about framing:
// Content-Length together with Transfer-Encoding, a Content-Length that
// is not plain digits, or several that differ.
func responseFraming(head []byte) (respFraming, error) {
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	f := respFraming{length: -1}
	first := strings.Fields(lines[0])
	if len(first) >= 2 && len(first[1]) == 3 {
		for _, c := range []byte(first[1]) {
			if c < '0' || c > '9' {
				return respFraming{}, errUpstreamFraming
			}
			f.status = f.status*10 + int(c-'0')
		}
	} else {
		return respFraming{}, errUpstreamFraming
	}
	// net/http ignores Transfer-Encoding below HTTP/1.1.
	v := first[0]
	teApplies := !(len(v) == 8 && strings.HasPrefix(v, "HTTP/") && v[6] == '.' && (v[5] == '0' || (v[5] == '1' && v[7] == '0')))
	te := 0
	for _, line := range lines[1:] {
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\r"), ":")
		if !ok {
			continue // net/http judges the rest
		}
		switch {
		case strings.EqualFold(name, "Content-Length"):
			n, ok := parseContentLength(trimOWS(value))
			if !ok || (f.length >= 0 && f.length != n) {
				return respFraming{}, errUpstreamFraming
			}
			f.length = n
		case strings.EqualFold(name, "Transfer-Encoding"):
			te++
			if te == 1 && strings.EqualFold(trimOWS(value), "chunked") {
				f.te = 1
			} else {
				f.te = 2
			}
		}
	}
	if te > 0 && f.length >= 0 {
		return respFraming{}, errUpstreamFraming
	}
	if !teApplies {
		f.te = 0
	}
	return f, nil
}

// attempt is what a forwarded request was given by the transport: the
// last of its connections that is one of ours.
type attempt struct {
	mu   sync.Mutex
	conn *framingConn
}

func (a *attempt) current() *framingConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conn
}

// armFraming arms each connection r is given, when it is one of ours.
func armFraming(r *http.Request) (*http.Request, *attempt) {
	at := &attempt{}
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		fc, _ := info.Conn.(*framingConn)
		if fc != nil {
			fc.arm(r.Method)
		}
		at.mu.Lock()
		at.conn = fc
		at.mu.Unlock()
	}}
	return r.WithContext(httptrace.WithClientTrace(r.Context(), trace)), at
}

// boundInterim counts the 1xx interim responses of a forwarded request and
// fails it after maxInterim. ReverseProxy passes 1xx on to the client (its
// Got1xxResponse hook), and net/http then sets no bound on how many come.
// The hook must be in the request's context before ReverseProxy adds its
// own (in Rewrite): of two composed hooks, only the earlier one's error
// counts (httptrace calls the later one first and drops its result).
func boundInterim(r *http.Request) *http.Request {
	n := 0 // the transport reads one response at a time
	trace := &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
		if n++; n > maxInterim {
			return errTooManyInterim
		}
		return nil
	}}
	return r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
}

// errTooManyInterim: an upstream sent more 1xx interim responses than
// maxInterim before its final one.
var errTooManyInterim = errors.New("upstream sent too many 1xx interim responses")

// gatedBody is a forwarded request's body that is not read before its
// connection is found fit (framingConn.fitForBody): a request that meets
// an unfit connection fails with its body untouched, and breakerTransport
// sends it again on another. net/http itself only resends a body it can
// rewind (GetBody), which a client's upload is not.
type gatedBody struct {
	src  io.ReadCloser
	at   *attempt
	read atomic.Bool // something was asked of src
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if !b.read.Load() {
		if fc := b.at.current(); fc != nil {
			if err := fc.fitForBody(); err != nil {
				return 0, err
			}
		}
		b.read.Store(true)
	}
	return b.src.Read(p)
}

// Close leaves an untouched body open for the next attempt; the
// ReverseProxy closes the client's body when the exchange ends.
func (b *gatedBody) Close() error {
	if !b.read.Load() {
		return nil
	}
	return b.src.Close()
}

// untouched: nothing of the body has been read (or there is none).
func (b *gatedBody) untouched() bool { return b == nil || !b.read.Load() }

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
		return newFramingConn(c, nil), nil
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
		tc, records, err := dialRecordTLS(ctx, d, network, addr, conf)
		if err != nil {
			return nil, err
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return tc, nil // net/http must see the *tls.Conn to speak HTTP/2
		}
		return newFramingConn(tc, records), nil
	}
	return dial, dialTLS
}
