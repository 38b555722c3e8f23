package testutil

import (
	"sync/atomic"
	"time"
)

// Clock is a clock the test moves by hand, for code that reads the time
// through a `now func() time.Time` (a breaker's cooldown, a token's
// expiry, a signature's age): nothing expires and nothing half-opens until
// the test says so, so such tests neither sleep nor race the real clock.
// Safe for use from several goroutines.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a Clock standing at start.
func NewClock(start time.Time) *Clock {
	c := &Clock{}
	c.ns.Store(start.UnixNano())
	return c
}

// Now is the clock's time; pass the method value as the code's `now`.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
