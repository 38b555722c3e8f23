package logging

import (
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RecentBytes is how much of the recent log the ring keeps for sysdump.
const RecentBytes = 256 << 10

// WarnEvery is the rate limit of a repeated warning or error.
const WarnEvery = 10 * time.Second

// Output is the agent's logging: JSON lines on w through one Sink, the
// logger's own lines also kept in a Ring (access lines are not: they are
// many and the metrics sum them up).
type Output struct {
	Sink   *Sink
	Ring   *Ring
	Level  *slog.LevelVar
	Logger *slog.Logger
}

// New returns the agent's logging to w at level, with a sink of capacity
// bytes (DefaultBuffer when <= 0).
func New(w io.Writer, level slog.Level, capacity int) *Output {
	o := &Output{Sink: NewSink(w, capacity), Ring: NewRing(RecentBytes), Level: new(slog.LevelVar)}
	o.Level.Set(level)
	h := slog.NewJSONHandler(io.MultiWriter(o.Sink, o.Ring), &slog.HandlerOptions{Level: o.Level})
	o.Logger = slog.New(RateLimit(h, WarnEvery))
	return o
}

// Collectors are the logging's metrics.
func (o *Output) Collectors() []prometheus.Collector {
	return []prometheus.Collector{o.Sink.Collector()}
}

// Close flushes and stops the sink (bounded; see Sink.Close).
func (o *Output) Close() error { return o.Sink.Close() }
