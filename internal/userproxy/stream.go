package userproxy

import (
	"bufio"
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/edgecache"
)

// The fast path's response pipeline: an upstream response head has been
// read; stream passes its body to the client (re-framed when its length is
// unknown or the body is rewritten), rebasing packuments on the way, and
// hands the same bytes to a cache fill when there is one. Nothing is held
// whole in memory, whatever the body's size.

// isPackumentResponse: a successful GET of a packument, whose tarball URLs
// are rebased onto the edge.
func isPackumentResponse(method, path string, h *upstreamHead) bool {
	return rebasable(method, path, h.status, h.contentType, h.encoding)
}

// rebasable is the one rule, for both front ends: a successful GET of a
// package's document (not under /-/), JSON, plain or gzip.
func rebasable(method, path string, status int, contentType, encoding string) bool {
	return method == "GET" && status == http.StatusOK && !strings.Contains(path, "/-/") &&
		(strings.HasPrefix(contentType, "application/json") || strings.HasPrefix(contentType, "application/vnd.npm.install-v1+json")) &&
		(encoding == "" || strings.EqualFold(encoding, "gzip"))
}

// streamed is what stream did.
type streamed struct {
	code     int
	n        int64 // body bytes written to the client
	ok       bool  // the client got a whole response; false: cut
	complete bool  // the upstream body ended where its framing said
	wholeDoc bool  // a rewritten packument was one whole JSON object
}

// streamOpts are the choices of one stream.
type streamOpts struct {
	rewrite    *rebaser                     // non-nil: rebase tarball URLs (packument)
	learn      func(path, integrity string) // integrity pairs seen while rewriting
	fill       *edgecache.Fill              // non-nil: the served bytes also go here
	keepFill   func() bool                  // after the client is gone, go on filling?
	cacheState string                       // X-Regedge-Cache, "" for none
	check      func([]byte)                 // sees the raw body (the tarball fill's gzip check)
	headers    func(bw *bufio.Writer)       // extra response headers
	bodyIdle   time.Duration                // longest silence between body reads
	finish     func(streamed)               // when the body is read, before the client has its end
}

// upstreamBody is the body reader of an upstream response with its
// framing, and whether the framing proves it complete once read to EOF.
func upstreamBody(uc *upConn, h *upstreamHead, method string) (src io.Reader, framed bool) {
	switch {
	case noBody(method, h.status):
		return nil, true
	case h.chunked:
		return httputil.NewChunkedReader(uc.br), true
	case h.length >= 0:
		return &io.LimitedReader{R: uc.br, N: h.length}, true
	default:
		h.close = true
		return uc.br, false // to the upstream's close: never provably complete
	}
}

// stream writes the response whose head is h to the client, and returns
// the upstream connection to the pool when its response was read to the
// end (else closes it).
func (p *Proxy) stream(bw *bufio.Writer, req *fastRequest, up *route, uc *upConn, h *upstreamHead, reqID string, closeConn bool, o streamOpts) streamed {
	res := streamed{code: h.status}
	closeConn = closeConn || p.draining.Load()
	uc.bodyIdle = o.bodyIdle
	src, framed := upstreamBody(uc, h, req.method)
	if src == nil {
		writeHead(bw, h, reqID, closeConn, false, false, o)
		p.finishUpstream(up, uc, h)
		res.ok, res.complete = true, true
		return res
	}
	rewritten := o.rewrite != nil
	chunked := rewritten || h.length < 0
	writeHead(bw, h, reqID, closeConn, chunked, rewritten, o)
	var client io.Writer = bw
	var cw io.WriteCloser
	if chunked {
		cw = httputil.NewChunkedWriter(bw)
		client = cw
	}
	// Headers reach the client as soon as they are known: when no body
	// bytes are waiting, the head goes now; later, whatever the client
	// has is flushed whenever the upstream pauses.
	if uc.br.Buffered() == 0 {
		_ = bw.Flush() // a client already gone shows at its next write
	}
	// Before a read from the upstream that may block, what the client
	// has is flushed (a trickling upstream trickles to the client); the
	// last bytes of a body of known length are held until the fill is
	// committed (finish), so that a client never has its whole answer
	// before the cache does. Rebased output is gathered into chunks of up
	// to 16 KiB rather than one chunk per splice.
	lr, _ := src.(*io.LimitedReader)
	sink := &tee{client: client, fill: o.fill, keep: o.keepFill, keepFor: o.bodyIdle}
	var out io.Writer = sink
	var rbuf *bufio.Writer
	if rewritten {
		rbuf = rewriteBufs.Get().(*bufio.Writer)
		rbuf.Reset(sink)
		defer func() { rbuf.Reset(nil); rewriteBufs.Put(rbuf) }()
		out = rbuf
	}
	cr := &countReader{r: src, sink: sink, before: func() {
		if uc.br.Buffered() > 0 {
			return
		}
		if rbuf != nil {
			_ = rbuf.Flush() // into the tee, which keeps the client's error
		}
		if lr == nil || lr.N > 0 {
			sink.flushClient(bw)
		}
	}}
	var err error
	if rewritten {
		body := io.Reader(cr)
		if o.check != nil {
			body = io.TeeReader(cr, checkWriter(o.check))
		}
		w := newRewriter(out, o.rewrite)
		w.learn = o.learn
		err = rewriteStream(w, body, h.encoding)
		res.wholeDoc = err == nil && w.complete()
		if err == errNotWholeJSON {
			err = nil
		}
		if ferr := rbuf.Flush(); err == nil && ferr != nil && sink.stopped() != nil {
			err = ferr
		}
	} else {
		buf := copyBufs.Get().(*[]byte)
		var rd io.Reader = cr
		if o.check != nil {
			rd = io.TeeReader(cr, checkWriter(o.check))
		}
		_, err = io.CopyBuffer(sink, rd, *buf)
		copyBufs.Put(buf)
	}
	if err == nil && h.length >= 0 && !h.chunked && cr.n != h.length {
		err = io.ErrUnexpectedEOF
	}
	res.n = sink.n
	if err == nil && h.chunked && !skipTrailers(uc.br) {
		h.close = true
	}
	res.complete = err == nil && framed
	if o.finish != nil {
		o.finish(res)
	}
	if err != nil || sink.clientErr != nil {
		// Never a truncated body that looks complete: the client's
		// connection is cut with what it has.
		_ = bw.Flush()
		uc.Close()
		return res
	}
	if cw != nil {
		cw.Close()
		bw.WriteString("\r\n")
	}
	p.finishUpstream(up, uc, h)
	res.ok = true
	return res
}

// rewriteBufs gather a rebased body into chunks for the client.
var rewriteBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// countReader reads the upstream body: it counts, calls before ahead of
// each read, and stops once the client is gone and nobody waits for the
// fill.
type countReader struct {
	r      io.Reader
	n      int64
	sink   *tee
	before func()
}

func (c *countReader) Read(p []byte) (int, error) {
	c.before()
	if err := c.sink.stopped(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type checkWriter func([]byte)

func (c checkWriter) Write(p []byte) (int, error) { c(p); return len(p), nil }

// rewriteStream feeds an upstream body (gzip when encoding says so)
// through the rewriter.
func rewriteStream(w *rewriter, src io.Reader, encoding string) error {
	if strings.EqualFold(encoding, "gzip") {
		zr, err := gzip.NewReader(src)
		if err != nil {
			return err
		}
		defer func() { _ = zr.Close() }() // a gzip.Reader's Close has nothing to report after EOF
		src = zr
	}
	buf := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(w, struct{ io.Reader }{src}, *buf)
	copyBufs.Put(buf)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil && w.state != inRaw && !w.complete() {
		err = errNotWholeJSON
	}
	return err
}

// tee writes to the client and to a cache fill. A fill's failure never
// fails the client's response; a client that goes away ends the copy
// unless the fill should go on (others wait for it).
type tee struct {
	client    io.Writer
	clientErr error
	fill      *edgecache.Fill
	keep      func() bool
	n         int64 // written to the client
	// After the client is gone, a fill others wait for goes on for at
	// most keepFor.
	keepFor time.Duration
	goneAt  time.Time
}

func (t *tee) gone(err error) {
	if t.clientErr == nil {
		t.clientErr, t.goneAt = err, time.Now()
	}
}

// flushClient sends what the client's writer holds.
func (t *tee) flushClient(bw *bufio.Writer) {
	if t.clientErr == nil {
		if err := bw.Flush(); err != nil {
			t.gone(err)
		}
	}
}

// stopped is the client's error once copying should stop: the client is
// gone and no one else waits for the fill (or has waited long enough).
func (t *tee) stopped() error {
	if t.clientErr == nil {
		return nil
	}
	if t.fill != nil && t.fill.Err() == nil && t.keep != nil && t.keep() && time.Since(t.goneAt) < t.keepFor {
		return nil
	}
	return t.clientErr
}

func (t *tee) Write(p []byte) (int, error) {
	if t.clientErr == nil {
		n, err := t.client.Write(p)
		t.n += int64(n)
		if err != nil {
			t.gone(err)
		}
	}
	if t.fill != nil && t.fill.Err() == nil {
		_, _ = t.fill.Write(p) // a fill keeps its own error (Fill.Err); never the client's
	}
	if err := t.stopped(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeHead writes the client's response head from the upstream's:
// hop-by-hop headers dropped, chunked when the body is re-framed; a
// rewritten body loses the headers that described the upstream's bytes.
func writeHead(bw *bufio.Writer, h *upstreamHead, reqID string, closeConn, chunked, rewritten bool, o streamOpts) {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(h.statusLine)
	bw.WriteString("\r\n")
	for i, name := range h.names {
		if inList(name, hopByHopResponse) || connectionListed(h.connNames, name) || strings.EqualFold(name, codec.HeaderRequestID) || strings.EqualFold(name, "X-Regedge-Cache") {
			continue
		}
		if (rewritten || chunked) && strings.EqualFold(name, "Content-Length") {
			continue
		}
		if rewritten && (strings.EqualFold(name, "Content-Encoding") || strings.EqualFold(name, "Etag")) {
			continue
		}
		bw.WriteString(name)
		bw.WriteString(": ")
		bw.WriteString(h.values[i])
		bw.WriteString("\r\n")
	}
	if chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if o.cacheState != "" {
		bw.WriteString("X-Regedge-Cache: ")
		bw.WriteString(o.cacheState)
		bw.WriteString("\r\n")
	}
	if o.headers != nil {
		o.headers(bw)
	}
	bw.WriteString(codec.HeaderRequestID + ": ")
	bw.WriteString(reqID)
	bw.WriteString("\r\n")
	if closeConn {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

// deadlineConn sets a read deadline before each read while idle > 0:
// the longest silence allowed between reads of a body.
type deadlineConn struct {
	net.Conn
	uc *upConn
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	if d.uc.bodyIdle > 0 {
		d.Conn.SetReadDeadline(time.Now().Add(d.uc.bodyIdle))
	}
	return d.Conn.Read(p)
}
