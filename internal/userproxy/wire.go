package userproxy

import (
	"bufio"
	"bytes"
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/regedge/regedge/internal/codec"
)

// The fast path's HTTP/1.1 parsing. It is deliberately narrow: it accepts
// the requests registry clients send for packuments and tarballs (GET or
// HEAD, HTTP/1.1, no body, a plain Host) and says "not mine" to everything
// else, which then goes to net/http unchanged. It never answers a
// malformed request itself, so request smuggling and header limits stay
// net/http's to judge.

// maxFastHeaders bounds the header lines of a request the fast path takes.
const maxFastHeaders = 48

// fastRequest is one parsed request head. Strings point into head, one
// copy of the bytes.
type fastRequest struct {
	head   string
	method string
	target string // as sent: path and query, escapes kept
	path   string // target without the query
	host   string
	names  [maxFastHeaders]string
	values [maxFastHeaders]string
	n      int
	close  bool // Connection: close
	gzipOK bool // Accept-Encoding names gzip

	remote, local netip.AddrPort
	cs            *connState // the connection's
}

// header implements inbound.
func (r *fastRequest) header(name string) (string, int) {
	first, n := "", 0
	for i := 0; i < r.n; i++ {
		if len(r.names[i]) == len(name) && strings.EqualFold(r.names[i], name) {
			if n == 0 {
				first = r.values[i]
			}
			n++
		}
	}
	return first, n
}

func (r *fastRequest) escapedPath() string { return r.path }

func (r *fastRequest) requestMethod() string { return r.method }

func (r *fastRequest) requestHost() string { return r.host }

func (r *fastRequest) remoteAddr() (netip.AddrPort, bool) { return r.remote, r.remote.IsValid() }

func (r *fastRequest) localAddr() (netip.AddrPort, bool) { return r.local, r.local.IsValid() }

func (r *fastRequest) conn() *connState { return r.cs }

// errHeadTooLarge: the head did not fit the reader's buffer.
var errHeadTooLarge = errors.New("head larger than the buffer")

// errBareLF: the head has a line ending in LF alone; net/http reads those
// (RFC 9112 §2.2 lets a recipient), the fast path does not.
var errBareLF = errors.New("bare LF in the head")

// peekHead waits for a complete head ("\r\n\r\n") in br without consuming
// anything, so that a request the fast path does not take can be handed on
// byte for byte.
func peekHead(br *bufio.Reader) ([]byte, error) {
	want := 1
	for {
		_, err := br.Peek(want)
		b, _ := br.Peek(br.Buffered())
		end := -1
		if len(b) >= 4 {
			if i := bytes.Index(b, crlfcrlf); i >= 0 {
				end = i + 4
			}
		}
		// A bare LF before the end would never be followed by the CRLF
		// CRLF waited for: the head goes to net/http now, not after the
		// header timeout.
		seen := b
		if end >= 0 {
			seen = b[:end]
		}
		for i := bytes.IndexByte(seen, '\n'); i >= 0; {
			if i == 0 || seen[i-1] != '\r' {
				return nil, errBareLF
			}
			j := bytes.IndexByte(seen[i+1:], '\n')
			if j < 0 {
				break
			}
			i += 1 + j
		}
		if end >= 0 {
			return b[:end], nil
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, errHeadTooLarge
			}
			return nil, err
		}
		want = br.Buffered() + 1
		if want > br.Size() {
			return nil, errHeadTooLarge
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// parseRequest fills r from a complete head; false means "not for the fast
// path" (net/http will judge it).
func parseRequest(head []byte, r *fastRequest) bool {
	s := string(head)
	r.head, r.n, r.close, r.gzipOK, r.host = s, 0, false, false, ""
	eol := strings.Index(s, "\r\n")
	line := s[:eol]
	sp1 := strings.IndexByte(line, ' ')
	if sp1 < 0 {
		return false
	}
	r.method = line[:sp1]
	if r.method != "GET" && r.method != "HEAD" {
		return false
	}
	rest := line[sp1+1:]
	sp2 := strings.IndexByte(rest, ' ')
	if sp2 < 0 || rest[sp2+1:] != "HTTP/1.1" {
		return false
	}
	r.target = rest[:sp2]
	if len(r.target) == 0 || r.target[0] != '/' || !visibleASCII(r.target) || strings.IndexByte(r.target, '#') >= 0 {
		return false
	}
	r.path = r.target
	if q := strings.IndexByte(r.target, '?'); q >= 0 {
		r.path = r.target[:q]
	}
	if !validEscapes(r.path) {
		return false // net/http answers 400 (found by FuzzParseRequest)
	}
	s = s[eol+2 : len(s)-2] // the header lines, each ending in CRLF
	hosts := 0
	for len(s) > 0 {
		var name, value string
		var ok bool
		if name, value, s, ok = nextField(s); !ok || r.n == maxFastHeaders {
			return false
		}
		switch {
		case strings.EqualFold(name, "Host"):
			hosts++
			r.host = value
		case strings.EqualFold(name, "Content-Length"), strings.EqualFold(name, "Transfer-Encoding"),
			strings.EqualFold(name, "Upgrade"), strings.EqualFold(name, "Expect"):
			return false // a body or a protocol switch: net/http's
		case strings.EqualFold(name, "Connection"):
			for _, tok := range strings.Split(value, ",") {
				switch tok = trimOWS(tok); {
				case strings.EqualFold(tok, "close"):
					r.close = true
				case strings.EqualFold(tok, "keep-alive"), tok == "":
				default:
					return false // names more hop-by-hop headers
				}
			}
		case strings.EqualFold(name, "Accept-Encoding"):
			r.gzipOK = r.gzipOK || acceptsGzip(value)
		}
		r.names[r.n], r.values[r.n] = name, value
		r.n++
	}
	// A Host net/http would refuse is its to refuse (400); one it takes
	// but that is no plain host[:port] is refused by the checks (admit).
	return hosts == 1 && r.host != "" && httpguts.ValidHostHeader(r.host)
}

// nextField splits the first line off s (header lines, each ending in
// CRLF) into a field's name and value; ok is false for a line that is not a
// valid field (RFC 9110 §5: token, colon, value without controls).
func nextField(s string) (name, value, rest string, ok bool) {
	eol := strings.Index(s, "\r\n")
	line, rest := s[:eol], s[eol+2:]
	colon := strings.IndexByte(line, ':')
	if colon <= 0 {
		return "", "", rest, false
	}
	name, value = line[:colon], trimOWS(line[colon+1:])
	return name, value, rest, isToken(name) && fieldValue(value)
}

// acceptsGzip reads an Accept-Encoding value: gzip listed without q=0.
func acceptsGzip(v string) bool {
	for _, part := range strings.Split(v, ",") {
		coding, params, _ := strings.Cut(trimOWS(part), ";")
		if !strings.EqualFold(trimOWS(coding), "gzip") {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return !(strings.HasPrefix(q, "q=0") && strings.Trim(q[3:], ".0") == "")
	}
	return false
}

// fastForwardSkip: request headers the fast path never sends upstream:
// what net/http's path drops (dropHeaders: hop-by-hop headers, the client's
// credentials, its encoding wishes), Host, and the config headers and
// request ID, which are set from the verdict.
var fastForwardSkip = append(append([]string{"Host"}, dropHeaders...),
	codec.HeaderRequestID, codec.HeaderConfigDump, codec.HeaderConfigVersion, codec.HeaderRegistryHash,
	codec.HeaderFeatureFlags, codec.HeaderTerminalMode, codec.HeaderTerminalRows, codec.HeaderTerminalCols)

// hopByHopResponse: response headers never passed to the client as they
// came (the edge frames the body itself); both front ends use it.
var hopByHopResponse = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Trailer", "Upgrade"}

func inList(name string, list []string) bool {
	for _, h := range list {
		if len(h) == len(name) && strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// upstreamHead is a parsed response head from an upstream.
type upstreamHead struct {
	status      int
	statusLine  string // "200 OK": code and reason as received
	names       []string
	values      []string
	length      int64 // -1: not given
	chunked     bool
	close       bool // the upstream closes after this response
	contentType string
	encoding    string
	connNames   string // the Connection header's value (more hop-by-hop names)
}

var errBadUpstreamHead = errors.New("malformed response head from the upstream")

// parseResponse parses an upstream's response head.
func parseResponse(head []byte, h *upstreamHead) error {
	s := string(head)
	eol := strings.Index(s, "\r\n")
	line := s[:eol]
	var http10 bool
	switch {
	case strings.HasPrefix(line, "HTTP/1.1 "):
	case strings.HasPrefix(line, "HTTP/1.0 "):
		http10 = true
	default:
		return errBadUpstreamHead
	}
	h.statusLine = line[len("HTTP/1.1 "):]
	if len(h.statusLine) < 3 || (len(h.statusLine) > 3 && h.statusLine[3] != ' ') {
		return errBadUpstreamHead
	}
	code, err := strconv.Atoi(h.statusLine[:3])
	if err != nil || code < 100 || !fieldValue(h.statusLine) {
		return errBadUpstreamHead
	}
	if len(h.statusLine) == 3 {
		h.statusLine += " "
	}
	*h = upstreamHead{status: code, statusLine: h.statusLine, names: h.names[:0], values: h.values[:0], length: -1, close: http10}
	s = s[eol+2 : len(s)-2]
	for len(s) > 0 {
		var name, value string
		var ok bool
		if name, value, s, ok = nextField(s); !ok {
			return errBadUpstreamHead
		}
		switch {
		case strings.EqualFold(name, "Content-Length"):
			n, ok := parseContentLength(value)
			if !ok || (h.length >= 0 && h.length != n) {
				return errBadUpstreamHead
			}
			h.length = n
		case strings.EqualFold(name, "Transfer-Encoding"):
			if !strings.EqualFold(value, "chunked") || h.chunked {
				return errBadUpstreamHead
			}
			h.chunked = true
		case strings.EqualFold(name, "Connection"):
			h.connNames = value
			for _, tok := range strings.Split(value, ",") {
				if strings.EqualFold(trimOWS(tok), "close") {
					h.close = true
				}
			}
		case strings.EqualFold(name, "Content-Type"):
			h.contentType = value
		case strings.EqualFold(name, "Content-Encoding"):
			h.encoding = value
		}
		h.names = append(h.names, name)
		h.values = append(h.values, value)
	}
	if h.chunked && h.length >= 0 {
		// RFC 9112 §6.3: "ought to be handled as an error"; passing it on
		// is how responses are split and caches poisoned.
		return errBadUpstreamHead
	}
	return nil
}

// parseContentLength reads a Content-Length value: decimal digits only (no
// sign, no list), as RFC 9110 §8.6 writes it; strconv alone takes "+5".
func parseContentLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// noBody: responses that never carry a body.
func noBody(method string, status int) bool {
	return method == "HEAD" || status == 204 || status == 304 || status < 200
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// validEscapes: every % in s starts a %XX escape, as url.ParseRequestURI
// requires of a path.
func validEscapes(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return false
		}
		i += 2
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// fieldValue: no control characters but tab (RFC 9110 §5.5); obs-text is
// allowed.
func fieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// isToken: RFC 9110 tchar+.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
