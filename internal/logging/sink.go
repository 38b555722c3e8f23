// Package logging is where the agent's log lines go: a bounded buffer that
// a writer goroutine empties into stderr (a stalled reader costs lines,
// never the proxy's progress), the log level and the access-line switch,
// a rate limit on repeated warnings, and a ring of the recent lines for
// `regedge sysdump`.
package logging

import (
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBuffer is the sink's bound: about 0.6 s of access lines at 20,000
// requests a second, which rides out a slow reader without holding much.
const DefaultBuffer = 4 << 20

// flushEvery batches lines into one write(2) per tick, or sooner when the
// buffer is half full: a write per line cost a tenth of the proxy's CPU
// under load (pprof).
const flushEvery = 100 * time.Millisecond

// closeWait bounds Close: a reader that never comes back must not keep
// the agent from exiting.
const closeWait = 2 * time.Second

// Sink is an io.Writer that never blocks its callers. Each Write (one log
// line) is copied into a bounded buffer under a short lock; a goroutine
// writes the buffer out. When the buffer is full (the reader is slower
// than the lines, or stopped) the line is dropped and counted in
// regedge_log_dropped_total: lines are lost, requests are not held.
type Sink struct {
	out      io.Writer
	capacity int

	mu      sync.Mutex
	pending []byte // whole lines waiting for the writer
	spare   []byte // the buffer the writer last wrote, reused
	closed  bool

	kick    chan struct{} // the buffer is half full
	stop    chan struct{}
	done    chan struct{}
	dropped prometheus.Counter
}

// NewSink starts a sink that writes to out, holding at most capacity
// bytes (DefaultBuffer when <= 0).
func NewSink(out io.Writer, capacity int) *Sink {
	if capacity <= 0 {
		capacity = DefaultBuffer
	}
	s := &Sink{
		out: out, capacity: capacity,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regedge_log_dropped_total",
			Help: "Log and access lines dropped because the log reader was slower than the lines (the buffer was full).",
		}),
	}
	go s.run()
	return s
}

// Write queues one line. It never blocks on the output and never fails:
// a line that does not fit is dropped and counted.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.closed || len(s.pending)+len(p) > s.capacity {
		s.mu.Unlock()
		s.dropped.Inc()
		return len(p), nil
	}
	s.pending = append(s.pending, p...)
	half := len(s.pending) >= s.capacity/2
	s.mu.Unlock()
	if half {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (s *Sink) run() {
	defer close(s.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.kick:
		case <-s.stop:
			s.flush()
			return
		}
		s.flush()
	}
}

// flush writes what is pending; callers keep queueing meanwhile.
func (s *Sink) flush() {
	s.mu.Lock()
	buf := s.pending
	s.pending = s.spare[:0]
	s.mu.Unlock()
	if len(buf) == 0 {
		s.mu.Lock()
		s.spare = buf
		s.mu.Unlock()
		return
	}
	_, _ = s.out.Write(buf) // a failed write loses these lines: the log is where it would be said
	s.mu.Lock()
	s.spare = buf[:0]
	s.mu.Unlock()
}

// Close writes what is buffered and stops the writer, waiting at most 2 s
// for an output that does not drain. Lines written after Close are
// dropped.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
	}
	return nil
}

// Collector is regedge_log_dropped_total.
func (s *Sink) Collector() prometheus.Collector { return s.dropped }
