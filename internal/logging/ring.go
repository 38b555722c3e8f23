package logging

import "sync"

// Ring keeps the most recent log lines, up to a number of bytes, for the
// support bundle (`regedge sysdump`): what the agent said lately, without
// access to the node's log store.
type Ring struct {
	mu    sync.Mutex
	max   int
	size  int
	lines [][]byte
	head  int // index of the oldest line
}

// NewRing keeps at most max bytes of whole lines.
func NewRing(max int) *Ring { return &Ring{max: max} }

// Write keeps a copy of p (one line); it never fails.
func (r *Ring) Write(p []byte) (int, error) {
	if len(p) > r.max {
		return len(p), nil
	}
	line := append([]byte(nil), p...)
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.size+len(line) > r.max && r.head < len(r.lines) {
		r.size -= len(r.lines[r.head])
		r.lines[r.head] = nil
		r.head++
	}
	if r.head > len(r.lines)/2 { // compact now and then, not per line
		r.lines = append(r.lines[:0], r.lines[r.head:]...)
		r.head = 0
	}
	r.lines = append(r.lines, line)
	r.size += len(line)
	return len(p), nil
}

// Bytes returns the kept lines, oldest first.
func (r *Ring) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]byte, 0, r.size)
	for _, l := range r.lines[r.head:] {
		out = append(out, l...)
	}
	return out
}
