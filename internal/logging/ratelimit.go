package logging

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// rateLimited passes at most one WARN or ERROR record with the same
// message per interval; the next one that passes says how many were
// suppressed. A failure that repeats per request (an upstream down, a
// disk full) then costs a line every interval, not a line per request.
// DEBUG and INFO records pass untouched.
type rateLimited struct {
	slog.Handler
	lim *limiter
}

type limiter struct {
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	seen  map[string]*seenMsg
}

type seenMsg struct {
	last       time.Time
	suppressed int
}

// maxMessages bounds the limiter's memory; messages are constants in the
// code, so this is never reached unless something logs formatted text.
const maxMessages = 4096

// RateLimit wraps h so that repeated warnings and errors (same level and
// message) pass at most once per every.
func RateLimit(h slog.Handler, every time.Duration) slog.Handler {
	return &rateLimited{Handler: h, lim: &limiter{every: every, now: time.Now, seen: map[string]*seenMsg{}}}
}

func (r *rateLimited) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level < slog.LevelWarn {
		return r.Handler.Handle(ctx, rec)
	}
	pass, suppressed := r.lim.allow(rec.Level.String() + " " + rec.Message)
	if !pass {
		return nil
	}
	if suppressed > 0 {
		rec = rec.Clone()
		rec.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return r.Handler.Handle(ctx, rec)
}

func (l *limiter) allow(key string) (bool, int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.seen[key]
	if s == nil {
		if len(l.seen) >= maxMessages {
			l.seen = map[string]*seenMsg{}
		}
		l.seen[key] = &seenMsg{last: now}
		return true, 0
	}
	if now.Sub(s.last) < l.every {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.last, s.suppressed = now, 0
	return true, n
}

func (r *rateLimited) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &rateLimited{Handler: r.Handler.WithAttrs(attrs), lim: r.lim}
}

func (r *rateLimited) WithGroup(name string) slog.Handler {
	return &rateLimited{Handler: r.Handler.WithGroup(name), lim: r.lim}
}
