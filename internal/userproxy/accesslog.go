package userproxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessInfo is what a request's access line and metrics say beyond the
// basics; both front ends fill it as the request goes.
type accessInfo struct {
	cache  string     // X-Regedge-Cache: hit, miss, stale, bypass; "" without a cache
	reason string     // why the edge answered itself (a refusal); "" when it did not
	client netip.Addr // the connection's peer
}

// Who answered a request: the regedge_proxy_requests_total label
// answered_by and the access line's field of the same name. An operator
// tells the edge's own 502 (upstream unreachable, breaker open) from the
// upstream's 502 by it.
const (
	answeredByEdge     = "edge"     // a refusal the edge made (reason says which)
	answeredByUpstream = "upstream" // the upstream's response, passed on
	answeredByCache    = "cache"    // from the edge cache (hit or stale)
)

func (a *accessInfo) answeredBy() string {
	switch {
	case a.reason != "":
		return answeredByEdge
	case a.cache == "hit" || a.cache == "stale":
		return answeredByCache
	}
	return answeredByUpstream
}

// refusalReason is the access line's reason for a refusal of admit: one
// word per check of §4.2 (the token's with its result).
func refusalReason(v *verdict) string {
	switch v.code {
	case http.StatusBadRequest:
		return "headers"
	case http.StatusServiceUnavailable:
		return "version"
	case http.StatusUnauthorized:
		if v.tokenResult == "" {
			return "token"
		}
		return "token:" + v.tokenResult
	case http.StatusTooManyRequests:
		return "rate_limit"
	case http.StatusBadGateway:
		return "unknown_hash"
	}
	return "refused"
}

// upstreamReason is the reason of an answer made because the upstream
// exchange failed.
func upstreamReason(err error) string {
	var co *circuitOpen
	switch {
	case errors.As(err, &co):
		return "breaker_open"
	case errors.Is(err, errClientGone):
		return "client_gone"
	case errors.Is(err, errBadUpstreamHead):
		return "upstream_bad_response"
	case answerCode(err) == http.StatusGatewayTimeout:
		return "upstream_timeout"
	}
	return "upstream_unreachable"
}

// accessRecord is one access line's fields.
type accessRecord struct {
	id, hash, method, path string
	status                 int
	bytes                  int64
	took                   time.Duration
	upstream, token        string
	client                 netip.Addr
	answeredBy, cache      string
	reason                 string
}

// finished counts a request in the metrics and writes its access line.
func (p *Proxy) finished(start time.Time, reqID string, hash uint32, method, path string, code int, bytes int64, upstream, tokenResult string, acc *accessInfo) {
	hs := p.hashLabel(hash)
	took := time.Since(start)
	by := acc.answeredBy()
	p.counter(hs, methodLabel(method), code, by).Inc()
	p.durationOf(hs).Observe(took.Seconds())
	if !p.sampled() {
		return
	}
	p.logAccess(&accessRecord{id: reqID, hash: hs, method: method, path: path, status: code, bytes: bytes,
		took: took, upstream: upstream, token: tokenResult, client: acc.client, answeredBy: by, cache: acc.cache, reason: acc.reason})
}

// sampled says whether this request's access line is written, per
// Config.AccessSample (log.access).
func (p *Proxy) sampled() bool {
	switch n := p.accessSample.Load(); {
	case n < 0:
		return false
	case n <= 1:
		return true
	default:
		return p.accessSeq.Add(1)%uint64(n) == 0
	}
}

// SetAccessSample changes log.access at run time (a reload): 1 every line,
// N > 1 one in N, < 0 none.
func (p *Proxy) SetAccessSample(n int) { p.accessSample.Store(int64(n)) }

// clientString is the access line's client: the peer's address, "" when
// unknown.
func clientString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// logAccess writes the access line: to Config.AccessLog with the encoder
// below when set, else through the Logger. The encoder writes the bytes
// slog's JSONHandler would (TestAccessLineIsSlogsLine, FuzzAccessLine) for
// a fraction of the CPU: slog cost 2.8 us per line, 12% of the fast path's
// CPU under load (pprof, docs/benchmarks.md).
func (p *Proxy) logAccess(r *accessRecord) {
	if p.cfg.AccessLog == nil {
		p.log.LogAttrs(context.Background(), slog.LevelInfo, "request",
			slog.String("id", r.id), slog.String("registry_hash", r.hash), slog.String("method", r.method),
			slog.String("path", r.path), slog.Int("status", r.status), slog.Int64("bytes", r.bytes),
			slog.Float64("duration_ms", float64(r.took.Microseconds())/1000),
			slog.String("upstream", r.upstream), slog.String("token", r.token),
			slog.String("client", clientString(r.client)), slog.String("answered_by", r.answeredBy),
			slog.String("cache", r.cache), slog.String("reason", r.reason))
		return
	}
	if !p.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	bp := lineBufs.Get().(*[]byte)
	line := appendAccessLine((*bp)[:0], time.Now(), r)
	_, _ = p.cfg.AccessLog.Write(line) // a log that cannot be written is not the request's failure
	*bp = line
	lineBufs.Put(bp)
}

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// appendAccessLine appends r as one JSON line.
func appendAccessLine(dst []byte, now time.Time, r *accessRecord) []byte {
	dst = append(dst, `{"time":"`...)
	dst = now.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","level":"INFO","msg":"request","id":`...)
	dst = appendJSONString(dst, r.id)
	dst = append(dst, `,"registry_hash":`...)
	dst = appendJSONString(dst, r.hash)
	dst = append(dst, `,"method":`...)
	dst = appendJSONString(dst, r.method)
	dst = append(dst, `,"path":`...)
	dst = appendJSONString(dst, r.path)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(r.status), 10)
	dst = append(dst, `,"bytes":`...)
	dst = strconv.AppendInt(dst, r.bytes, 10)
	dst = append(dst, `,"duration_ms":`...)
	// encoding/json's form, which slog uses: 'f' between 1e-6 and 1e21,
	// always the case for microseconds / 1000 of an int64.
	dst = strconv.AppendFloat(dst, float64(r.took.Microseconds())/1000, 'f', -1, 64)
	dst = append(dst, `,"upstream":`...)
	dst = appendJSONString(dst, r.upstream)
	dst = append(dst, `,"token":`...)
	dst = appendJSONString(dst, r.token)
	dst = append(dst, `,"client":`...)
	switch {
	case !r.client.IsValid():
		dst = append(dst, `""`...)
	case r.client.Zone() != "": // an interface name: escaped like any string
		dst = appendJSONString(dst, r.client.String())
	default: // digits, dots, colons: nothing to escape, nothing allocated
		dst = append(dst, '"')
		dst = r.client.AppendTo(dst)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"answered_by":`...)
	dst = appendJSONString(dst, r.answeredBy)
	dst = append(dst, `,"cache":`...)
	dst = appendJSONString(dst, r.cache)
	dst = append(dst, `,"reason":`...)
	dst = appendJSONString(dst, r.reason)
	return append(dst, "}\n"...)
}

// appendJSONString appends s as a JSON string, escaped as slog escapes it:
// quotes, backslashes, control characters, U+2028 and U+2029; invalid
// UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			switch r {
			case utf8.RuneError:
				dst = append(dst, `\ufffd`...)
			default:
				dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
