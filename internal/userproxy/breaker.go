package userproxy

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// breaker is one upstream's circuit breaker: after Failures consecutive
// failures to reach the upstream (connection errors, timeouts, broken
// response heads) it opens and requests fail fast for Cooldown; then one
// probe is let through (half-open): success closes it, failure opens it
// again. Any response, whatever its status, is a success: a path that
// answers 500 is that path's answer (counted in the request metrics),
// never a reason to refuse the upstream's other paths.
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

	// lastOK: the last exchange reached the upstream (true until one
	// did not); lastAt: when it ended.
	lastOK bool
	lastAt time.Time
	// changed, when set, hears every outcome (after b.mu is released):
	// the metrics and the transition log lines.
	changed func(breakerEvent)
	latency prometheus.Observer // time to the response head
}

// breakerEvent is an outcome and the breaker's state after it.
type breakerEvent struct {
	ok, open bool
	from, to string // state before and after ("closed", "open")
	failures int
}

func newBreaker(limit int, cooldown time.Duration) *breaker {
	return &breaker{limit: limit, cooldown: cooldown, now: time.Now, probeWait: min(cooldown, 2*time.Second), lastOK: true}
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
	if b == nil {
		return
	}
	b.mu.Lock()
	wasOpen := b.limit > 0 && b.failures >= b.limit
	b.lastOK, b.lastAt = ok, b.now()
	if b.limit > 0 {
		b.endProbe()
		if ok {
			b.failures = 0
		} else {
			b.failures++
			if b.failures >= b.limit {
				b.openUntil = b.now().Add(b.cooldown)
			}
		}
	}
	ev := breakerEvent{ok: ok, open: b.limit > 0 && b.failures >= b.limit, failures: b.failures}
	changed := b.changed
	b.mu.Unlock()
	ev.from, ev.to = openWord(wasOpen), openWord(ev.open)
	if changed != nil {
		changed(ev)
	}
}

func openWord(open bool) string {
	if open {
		return "open"
	}
	return "closed"
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
	case b.limit <= 0 || b.failures < b.limit:
		return "closed"
	case b.now().Before(b.openUntil):
		return "open"
	}
	return "half-open"
}

// available: requests may reach the upstream: the breaker is closed (or,
// without a breaker, the last exchange got through).
func (b *breaker) available() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit <= 0 {
		return b.lastOK
	}
	return b.failures < b.limit
}

// lastExchange is the outcome and the end of the last exchange (zero time
// before any).
func (b *breaker) lastExchange() (bool, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastOK, b.lastAt
}

// upstreamMetrics are the per-upstream gauges and latency.
type upstreamMetrics struct {
	up, open *prometheus.GaugeVec
	duration *prometheus.HistogramVec
}

func newUpstreamMetrics() *upstreamMetrics {
	return &upstreamMetrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "regedge_upstream_up", Help: "1 when the last exchange with the upstream (a request or a probe) reached it, else 0.",
		}, []string{"upstream"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "regedge_upstream_breaker_open", Help: "1 while the upstream's circuit breaker is open or half-open (requests fail fast with 502), else 0.",
		}, []string{"upstream"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "regedge_upstream_request_duration_seconds", Help: "Time from sending a request upstream to its response head, by upstream (exchanges that got one).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"upstream"}),
	}
}

func (m *upstreamMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.up, m.open, m.duration}
}

// upstreamName is an upstream's label and log name: host:port.
func upstreamName(r *route) string { return r.URL.Host }

// watch wires a route's breaker to the metrics and the log: a transition
// is one line (opened at WARN with the failures that did it, closed at
// INFO), never a line per request.
func (p *Proxy) watch(r *route) {
	name := upstreamName(r)
	up, open := p.upstreams.up.WithLabelValues(name), p.upstreams.open.WithLabelValues(name)
	up.Set(1)
	open.Set(0)
	r.br.latency = p.upstreams.duration.WithLabelValues(name)
	cooldown := r.br.cooldown
	r.br.changed = func(ev breakerEvent) {
		if ev.ok {
			up.Set(1)
		} else {
			up.Set(0)
		}
		if ev.open {
			open.Set(1)
		} else {
			open.Set(0)
		}
		switch {
		case ev.from == "closed" && ev.to == "open":
			p.log.Warn("upstream circuit breaker opened: requests to it fail fast until a probe gets through",
				"upstream", name, "consecutive_failures", ev.failures, "cooldown", cooldown.String())
		case ev.from == "open" && ev.to == "closed":
			p.log.Info("upstream circuit breaker closed: the upstream answers again", "upstream", name)
		}
	}
}

// upstreamDone judges an upstream exchange that began at began: err nil
// means a response head arrived (whatever its status).
func (p *Proxy) upstreamDone(up *route, began time.Time, err error) {
	if err == nil && up.br.latency != nil {
		up.br.latency.Observe(time.Since(began).Seconds())
	}
	up.br.done(err == nil)
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
