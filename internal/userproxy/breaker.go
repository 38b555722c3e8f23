package userproxy

import (
	"sync"
	"time"
)

// breaker is one upstream's circuit breaker: after Failures consecutive
// failures it opens and requests fail fast for Cooldown; then one probe is
// let through (half-open): success closes it, failure opens it again.
type breaker struct {
	mu        sync.Mutex
	failures  int // consecutive
	openUntil time.Time
	probing   bool
	probeDone chan struct{} // closed when the probe in flight is judged
	limit     int
	cooldown  time.Duration
	now       func() time.Time
	// probeWait is how long a request waits for the probe's outcome
	// while half-open, instead of failing at once: when the upstream is
	// back, the requests that arrived during its probe go through.
	probeWait time.Duration
}

func newBreaker(limit int, cooldown time.Duration) *breaker {
	return &breaker{limit: limit, cooldown: cooldown, now: time.Now, probeWait: min(cooldown, 2*time.Second)}
}

// allow reports whether a request may go upstream now; when not, how long
// until the next probe.
func (b *breaker) allow() (bool, time.Duration) {
	if b == nil || b.limit <= 0 {
		return true, 0
	}
	waited := false
	for {
		b.mu.Lock()
		if b.failures < b.limit {
			b.mu.Unlock()
			return true, 0
		}
		now := b.now()
		if now.Before(b.openUntil) {
			b.mu.Unlock()
			return false, b.openUntil.Sub(now)
		}
		if !b.probing {
			b.probing = true // half-open: this request is the probe
			b.probeDone = make(chan struct{})
			b.mu.Unlock()
			return true, 0
		}
		if waited || b.probeWait <= 0 {
			b.mu.Unlock()
			return false, b.cooldown
		}
		// Wait (bounded) for the probe's outcome, then decide again.
		done := b.probeDone
		b.mu.Unlock()
		t := time.NewTimer(b.probeWait)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
		waited = true
	}
}

// endProbe wakes the requests waiting for the probe (under b.mu).
func (b *breaker) endProbe() {
	if b.probing && b.probeDone != nil {
		close(b.probeDone)
		b.probeDone = nil
	}
	b.probing = false
}

// done records the outcome of a request that allow let through.
func (b *breaker) done(ok bool) {
	if b == nil || b.limit <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.endProbe()
	if ok {
		b.failures = 0
		return
	}
	b.failures++
	if b.failures >= b.limit {
		b.openUntil = b.now().Add(b.cooldown)
	}
}

// abandon ends a request allow let through without judging the upstream
// (the client went away).
func (b *breaker) abandon() {
	if b == nil || b.limit <= 0 {
		return
	}
	b.mu.Lock()
	b.endProbe()
	b.mu.Unlock()
}

// state is "closed", "open" or "half-open", for logs and tests.
func (b *breaker) state() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.failures < b.limit:
		return "closed"
	case b.now().Before(b.openUntil):
		return "open"
	}
	return "half-open"
}

// retryBudget allows retries of idempotent requests up to ratio of the
// requests made: each request deposits ratio, each retry spends 1, with at
// most 10 saved up, so a failing upstream is not hammered with retries.
// Amounts are kept in thousandths, so that ten deposits of 0.1 make one.
type retryBudget struct {
	mu      sync.Mutex
	ratio   float64
	balance int64 // thousandths of a retry
}

func newRetryBudget(ratio float64) *retryBudget {
	if ratio <= 0 {
		return &retryBudget{} // retries off
	}
	return &retryBudget{ratio: ratio, balance: 1000}
}

func (r *retryBudget) deposit() {
	r.mu.Lock()
	r.balance += int64(r.ratio*1000 + 0.5)
	if r.balance > 10000 {
		r.balance = 10000
	}
	r.mu.Unlock()
}

func (r *retryBudget) spend() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.balance < 1000 {
		return false
	}
	r.balance -= 1000
	return true
}
