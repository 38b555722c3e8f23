package userproxy

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessRecord is one access line's fields.
type accessRecord struct {
	id, hash, method, path string
	status                 int
	bytes                  int64
	took                   time.Duration
	upstream, token        string
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
			slog.String("upstream", r.upstream), slog.String("token", r.token))
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
