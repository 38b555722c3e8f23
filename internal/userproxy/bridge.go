package userproxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strconv"

	"github.com/regedge/regedge/internal/codec"
)

// The edge cache lives on the net/http path (cachedForward, serveCached).
// When it is on, requests the fast path has parsed and checked are served
// by that same code through bridgeWriter, an http.ResponseWriter over the
// fast path's connection: one cache implementation, and cache hits keep
// the fast front end's savings (no net/http server, no background read).

// bridgeForward serves an admitted request with forward; it returns the
// status and body bytes answered, and false when the connection must
// close (the response could not be completed).
func (p *Proxy) bridgeForward(bw *bufio.Writer, req *fastRequest, v *verdict, reqID string, closeConn bool) (code int, n int64, ok bool) {
	u, err := url.ParseRequestURI(req.target)
	if err != nil { // parseRequest checked the escapes; net/http would answer 400
		return http.StatusBadRequest, writeRefusal(bw, req.method, http.StatusBadRequest, apiError{Error: "Bad request target"}, 0, reqID, closeConn), true
	}
	h := make(http.Header, req.n)
	for i := 0; i < req.n; i++ {
		k := textproto.CanonicalMIMEHeaderKey(req.names[i])
		h[k] = append(h[k], req.values[i])
	}
	r := (&http.Request{
		Method: req.method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: http.NoBody, Host: req.host, RemoteAddr: req.remote.String(), RequestURI: req.target,
		TLS: req.cs.tls,
	}).WithContext(context.WithValue(context.Background(), connStateKey{}, req.cs))
	w := &bridgeWriter{bw: bw, method: req.method, h: http.Header{}, closeConn: closeConn}
	w.h.Set(codec.HeaderRequestID, reqID)
	rw := &recorder{ResponseWriter: w, code: http.StatusOK}
	ok = func() (ok bool) {
		defer func() {
			if e := recover(); e != nil {
				if e != http.ErrAbortHandler {
					panic(e)
				}
				ok = false // the handler aborted: never a truncated body that looks complete
			}
		}()
		p.forward(rw, r, v.route, v.state, reqID)
		return w.finish()
	}()
	return rw.code, rw.bytes, ok
}

// bridgeWriter writes a handler's response on the fast path's connection:
// Content-Length when the handler set one, else chunked.
type bridgeWriter struct {
	bw        *bufio.Writer
	method    string
	h         http.Header
	closeConn bool

	wrote    bool
	chunked  io.WriteCloser // non-nil when the body is chunked
	declared int64          // Content-Length set by the handler; -1 none
	n        int64
}

func (w *bridgeWriter) Header() http.Header { return w.h }

func (w *bridgeWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	w.declared = -1
	if cl := w.h.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.declared = v
		} else {
			w.h.Del("Content-Length")
		}
	}
	bodyless := noBody(w.method, code)
	writeStatusLine(w.bw, code)
	for k, vs := range w.h {
		if inList(k, hopByHopResponse) {
			continue
		}
		for _, v := range vs {
			if !fieldValue(v) {
				continue
			}
			w.bw.WriteString(k)
			w.bw.WriteString(": ")
			w.bw.WriteString(v)
			w.bw.WriteString("\r\n")
		}
	}
	if w.declared < 0 && !bodyless {
		w.bw.WriteString("Transfer-Encoding: chunked\r\n")
		w.chunked = httputil.NewChunkedWriter(w.bw)
	}
	if w.closeConn {
		w.bw.WriteString("Connection: close\r\n")
	}
	w.bw.WriteString("\r\n")
}

func (w *bridgeWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.method == "HEAD" {
		return len(b), nil
	}
	var err error
	var n int
	if w.chunked != nil {
		n, err = w.chunked.Write(b)
	} else {
		n, err = w.bw.Write(b)
	}
	w.n += int64(n)
	return n, err
}

func (w *bridgeWriter) Flush() { w.bw.Flush() }

// finish ends the body; false when the response is incomplete.
func (w *bridgeWriter) finish() bool {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.chunked != nil {
		w.chunked.Close()
		w.bw.WriteString("\r\n")
		return true
	}
	return w.declared < 0 || w.method == "HEAD" || w.n == w.declared
}
