package userproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Tarball URLs in packuments point at the upstream; clients must fetch them
// through the edge (cache, token check, metrics). The rewriter rebases them
// in one streaming pass over the body, without decoding the JSON: it lexes
// just enough to know where strings are, finds the string values of
// "tarball" keys, and splices the edge's base in when the URL is on one of
// the upstream's origins. Every other byte goes through unchanged, and its
// memory is a few small buffers whatever the packument's size.

// origin is a scheme and host (lowercase, default port dropped) and the
// path prefix under which an upstream serves the registry.
type origin struct {
	scheme, host, prefix string
}

// originOf normalises a URL's origin: scheme and host are compared
// case-insensitively, and https://h:443 is https://h (80 for http).
func originOf(u *url.URL) origin {
	scheme := strings.ToLower(u.Scheme)
	return origin{scheme: scheme, host: normHost(scheme, u.Host), prefix: strings.TrimSuffix(u.EscapedPath(), "/")}
}

// normHost lowercases host[:port] and drops the scheme's default port.
func normHost(scheme, host string) string {
	host = strings.ToLower(host)
	switch {
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		return strings.TrimSuffix(host, ":443")
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		return strings.TrimSuffix(host, ":80")
	}
	return host
}

// hostHeader is the Host an upstream request carries: the URL's host
// without the scheme's default port (RFC 9110 §7.2).
func hostHeader(u *url.URL) string {
	h := u.Host
	switch {
	case u.Scheme == "https" && strings.HasSuffix(h, ":443"):
		return strings.TrimSuffix(h, ":443")
	case u.Scheme == "http" && strings.HasSuffix(h, ":80"):
		return strings.TrimSuffix(h, ":80")
	}
	return h
}

// rebaser moves URLs on an upstream's origins onto the edge's base.
type rebaser struct {
	origins []origin // the upstream's own first, then its tarballHosts
	edge    string   // scheme://host[/path] without a trailing slash
}

// rebase returns the URL on the edge and the path it has there, or ok
// false when u is not on any of the upstream's origins.
func (rb *rebaser) rebase(u string) (rebased, path string, ok bool) {
	if p, ok, sure := rb.fastPath(u); sure {
		if !ok {
			return "", "", false
		}
		return rb.edge + p, p, true
	}
	return rb.slowRebase(u)
}

// fastPath decides the common case without url.Parse: a URL of plain
// path characters on one of the origins (sure is false when it cannot
// tell, and url.Parse must).
func (rb *rebaser) fastPath(u string) (path string, ok, sure bool) {
	for i := 0; i < len(u); i++ {
		if c := u[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || strings.IndexByte("-._~/:@!$&'()*+,;=", c) >= 0) {
			return "", false, false // escapes, queries, fragments: url.Parse's
		}
	}
	scheme, rest, found := strings.Cut(u, "://")
	if !found {
		return "", false, false
	}
	slash := strings.IndexByte(rest, '/')
	if slash < 0 || strings.IndexByte(rest[:slash], '@') >= 0 {
		return "", false, false
	}
	scheme = strings.ToLower(scheme)
	p, ok := rb.match(scheme, normHost(scheme, rest[:slash]), rest[slash:])
	return p, ok, true
}

// match finds the origin scheme://host whose path prefix (if it has one)
// starts p, and returns p without that prefix.
func (rb *rebaser) match(scheme, host, p string) (string, bool) {
	for _, o := range rb.origins {
		if o.scheme != scheme || o.host != host {
			continue
		}
		if o.prefix == "" {
			return p, true
		}
		if strings.HasPrefix(p, o.prefix+"/") {
			return p[len(o.prefix):], true
		}
	}
	return "", false
}

func (rb *rebaser) slowRebase(u string) (rebased, path string, ok bool) {
	parsed, err := url.Parse(u)
	if err != nil || parsed.Opaque != "" || parsed.User != nil {
		return "", "", false
	}
	scheme := strings.ToLower(parsed.Scheme)
	p, ok := rb.match(scheme, normHost(scheme, parsed.Host), parsed.EscapedPath())
	if !ok || p == "" || p[0] != '/' {
		return "", "", false
	}
	out := rb.edge + p
	if parsed.RawQuery != "" {
		out += "?" + parsed.RawQuery
	}
	return out, p, true
}

// lexer states.
const (
	inJSON  = iota // between tokens
	inStr          // inside a string that is not captured
	inValue        // inside a captured string value (a tarball or integrity URL)
	inRaw          // not a JSON object: everything passes through
	atStart        // before the first token
)

// what the last string was, for the tokens that may follow it.
const (
	keyNone = iota
	keyTarball
	keyIntegrity
)

const (
	maxKey      = 64      // longer strings are never "tarball" or "integrity", even \u-escaped
	maxValue    = 8 << 10 // longer values pass through unchanged
	maxDepth    = 64      // integrity pairing is tracked this deep
	maxLearnSet = 50000   // see integrities
)

// rewriter is an io.Writer that rebases tarball URLs of the JSON written to
// it and writes the result to dst. Close flushes what it holds.
type rewriter struct {
	dst io.Writer
	rb  *rebaser
	// learn, when set, receives (edge path, integrity) pairs of the dist
	// objects the rewriter saw: the tarball fill checks against them.
	learn func(path, integrity string)

	state   int
	esc     bool // the last byte inside a string was an unescaped backslash
	key     [maxKey]byte
	keyN    int
	keyLong bool
	keyEsc  bool
	after   int  // keyTarball/keyIntegrity: that key's string just ended
	colon   bool // ... and its colon was seen
	capture int  // the key whose value is being captured
	val     []byte
	depth   int
	frames  [maxDepth]frame // per open object: its tarball path and integrity
	objects int             // top-level values seen (a packument is one object)

	rewritten int   // URLs rebased
	err       error // the first write error
}

type frame struct {
	path, integrity string
}

func newRewriter(dst io.Writer, rb *rebaser) *rewriter {
	return &rewriter{dst: dst, rb: rb, state: atStart}
}

func (w *rewriter) emit(b []byte) {
	if w.err == nil && len(b) > 0 {
		_, w.err = w.dst.Write(b)
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Write lexes p; it never fails on bad JSON (that passes through), only
// when dst does.
func (w *rewriter) Write(p []byte) (int, error) {
	n := len(p)
	start := 0 // p[start:i] is pending output
	i := 0
	for i < len(p) && w.err == nil {
		switch w.state {
		case inRaw:
			i = len(p)
		case atStart:
			c := p[i]
			if isSpace(c) {
				i++
				continue
			}
			if c != '{' {
				w.state = inRaw
				continue
			}
			w.state = inJSON
		case inJSON:
			c := p[i]
			switch {
			case isSpace(c):
				i++
				continue
			case c == ':' && w.after != keyNone && !w.colon:
				w.colon = true
				i++
				continue
			case c == '"' && w.colon:
				// The value of a tarball or integrity key: hold it back.
				w.emit(p[start:i])
				w.capture, w.after, w.colon = w.after, keyNone, false
				w.val = append(w.val[:0], '"')
				w.state, w.esc = inValue, false
				i++
				start = i
				continue
			}
			w.after, w.colon = keyNone, false
			switch c {
			case '"':
				w.state, w.esc, w.keyN, w.keyLong, w.keyEsc = inStr, false, 0, false, false
			case '{':
				if w.depth < maxDepth {
					w.frames[w.depth] = frame{}
				}
				w.depth++
			case '}':
				if w.depth > 0 {
					w.depth--
					if w.depth < maxDepth {
						if f := w.frames[w.depth]; f.path != "" && f.integrity != "" && w.learn != nil {
							w.learn(f.path, f.integrity)
						}
					}
					if w.depth == 0 {
						w.objects++
					}
				}
			}
			i++
		case inStr:
			j := w.scanString(p, i, func(b []byte) {
				if w.keyLong {
					return
				}
				if bytes.IndexByte(b, '\\') >= 0 {
					w.keyEsc = true
				}
				if w.keyN+len(b) > maxKey {
					w.keyLong = true
					return
				}
				w.keyN += copy(w.key[w.keyN:], b)
			})
			if j < 0 {
				i = len(p)
				continue
			}
			i = j + 1
			w.state = inJSON
			w.after = w.keyKind()
		case inValue:
			j := w.scanString(p, i, func(b []byte) { w.val = append(w.val, b...) })
			if j < 0 {
				if len(w.val) > maxValue { // not a URL we rewrite: let it through
					w.emit(w.val)
					w.state, w.keyLong = inStr, true
				}
				i = len(p)
				start = i
				continue
			}
			w.val = append(w.val, '"')
			w.state = inJSON
			w.value()
			i = j + 1
			start = i
		}
	}
	if w.state != inValue {
		w.emit(p[start:])
	}
	if w.err != nil {
		return 0, w.err
	}
	return n, nil
}

// scanString finds the closing quote of the string p[i:] is inside; it
// passes the string's bytes before it to take, and returns its index, or
// -1 when the string goes on past p.
func (w *rewriter) scanString(p []byte, i int, take func([]byte)) int {
	for {
		q := bytes.IndexByte(p[i:], '"')
		if q < 0 {
			take(p[i:])
			w.esc = escapedAfter(p[i:], w.esc)
			return -1
		}
		if escapedAfter(p[i:i+q], w.esc) { // an escaped quote: part of the string
			take(p[i : i+q+1])
			w.esc = false
			i += q + 1
			continue
		}
		take(p[i : i+q])
		w.esc = false
		return i + q
	}
}

// escapedAfter says whether the byte after seg is escaped, given whether
// seg's first byte was: a quote is escaped by an odd run of backslashes
// before it (the run may have started in an earlier write).
func escapedAfter(seg []byte, esc bool) bool {
	run := 0
	for run < len(seg) && seg[len(seg)-1-run] == '\\' {
		run++
	}
	if run < len(seg) {
		esc = false // a byte other than a backslash ends any escape
	}
	if run%2 == 1 {
		esc = !esc
	}
	return esc
}

// keyKind tells whether the string that just ended is "tarball" or
// "integrity" (it is a key if a colon follows).
func (w *rewriter) keyKind() int {
	if w.keyLong {
		return keyNone
	}
	k := w.key[:w.keyN]
	if w.keyEsc { // rare: decode the escapes
		var s string
		if json.Unmarshal(append(append([]byte{'"'}, k...), '"'), &s) != nil {
			return keyNone
		}
		k = []byte(s)
	}
	switch string(k) {
	case "tarball":
		return keyTarball
	case "integrity":
		return keyIntegrity
	}
	return keyNone
}

// value handles a captured string value (w.val, quotes included).
func (w *rewriter) value() {
	raw := w.val
	var s string
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		s = string(raw[1 : len(raw)-1])
	} else if json.Unmarshal(raw, &s) != nil {
		w.emit(raw)
		return
	}
	top := w.depth - 1
	switch w.capture {
	case keyIntegrity:
		if top >= 0 && top < maxDepth {
			w.frames[top].integrity = s
		}
	case keyTarball:
		if rebased, path, ok := w.rb.rebase(s); ok {
			if top >= 0 && top < maxDepth {
				w.frames[top].path = path
			}
			w.rewritten++
			w.emit(appendJSONString(w.val[:0], rebased))
			return
		}
	}
	w.emit(raw)
}

// complete says whether what was written is one whole JSON object (its
// braces closed, nothing but space after), as far as the lexer can tell.
func (w *rewriter) complete() bool {
	return w.state == inJSON && w.depth == 0 && w.objects == 1 && w.after == keyNone
}

// Close writes out a value still held back (a body that ended inside it).
func (w *rewriter) Close() error {
	if w.state == inValue {
		w.emit(w.val)
		w.state = inStr
	}
	return w.err
}

// errNotWholeJSON: a packument that ended before its JSON did.
var errNotWholeJSON = errors.New("packument is not one whole JSON object")

// rewriteBody copies a packument body (gzip when encoding says so) from
// src to dst through a rewriter. It fails when src does, and with
// errNotWholeJSON when the body was JSON but ended early; a body that is
// not a JSON object passes through unchanged.
func rewriteBody(dst io.Writer, src io.Reader, encoding string, rb *rebaser, learn func(path, integrity string)) error {
	w := newRewriter(dst, rb)
	w.learn = learn
	return rewriteStream(w, src, encoding)
}
