package userproxy

import (
	"net/netip"
	"sync"
	"time"
)

// failureCounter counts token failures per source in a fixed window.
type failureCounter struct {
	mu  sync.Mutex
	m   map[netip.Addr]*failures
	now func() time.Time
}

type failures struct {
	since time.Time
	n     int
}

func newFailureCounter() *failureCounter {
	return &failureCounter{m: map[netip.Addr]*failures{}, now: time.Now}
}

// add records one failure of a and reports whether a reached threshold
// within window (then its count starts over).
func (c *failureCounter) add(a netip.Addr, threshold int, window time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	f := c.m[a]
	if f == nil || now.Sub(f.since) > window {
		if len(c.m) > 100000 { // bounded: forget everything rather than grow
			c.m = map[netip.Addr]*failures{}
		}
		f = &failures{since: now}
		c.m[a] = f
	}
	f.n++
	if f.n >= threshold {
		delete(c.m, a)
		return true
	}
	return false
}
