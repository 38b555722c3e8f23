package userproxy

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate limits, two of them, both token buckets with a burst of one minute:
//
//   - per client (Config.PerClientPerMinute): the token's sub, else the
//     source address (an IPv6 source by its /64, which one host can fill;
//     behind proxy.trustedProxies, the client address they forward), so one
//     large `npm ci` slows only itself;
//   - per registry hash (Config.PerMinute), all clients together: the
//     ceiling that protects an upstream.
//
// A request takes from its client's bucket first, then from the hash's; a
// request refused by the hash's bucket gives its client's token back.

// maxClientBuckets bounds the per-client buckets. When full, buckets that
// have refilled (a full bucket is the same as a new one) are dropped; if
// none has, new clients share one overflow bucket until some have.
const maxClientBuckets = 100000

// overflowClient is the bucket of clients that found no room.
const overflowClient = "overflow"

type clientLimits struct {
	perMinute int
	max       int

	mu        sync.Mutex
	m         map[string]*rate.Limiter
	lastSweep time.Time
}

func newClientLimits(perMinute int) *clientLimits {
	return &clientLimits{perMinute: perMinute, max: maxClientBuckets, m: map[string]*rate.Limiter{}}
}

// reserve takes a token from key's bucket: ok with the reservation (to
// cancel if a later check refuses), or the wait until one is available.
func (c *clientLimits) reserve(key string) (res *rate.Reservation, wait time.Duration, ok bool) {
	now := time.Now()
	c.mu.Lock()
	l := c.m[key]
	if l == nil {
		if len(c.m) >= c.max && now.Sub(c.lastSweep) >= time.Second {
			c.lastSweep = now
			for k, b := range c.m {
				if k != overflowClient && b.TokensAt(now) >= float64(c.perMinute) {
					delete(c.m, k)
				}
			}
		}
		if len(c.m) >= c.max {
			key = overflowClient
		}
		if l = c.m[key]; l == nil {
			l = rate.NewLimiter(rate.Limit(float64(c.perMinute)/60), c.perMinute)
			c.m[key] = l
		}
	}
	c.mu.Unlock()
	res = l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return nil, d, false
	}
	return res, 0, true
}

// clientKey is who the per-client limit counts a request against: the
// token's sub when the verdict has one, else the source address.
func (p *Proxy) clientKey(in inbound, v *verdict) (key, label string) {
	if v.client != "" {
		return v.client, "sub " + strings.TrimPrefix(v.client, "sub:")
	}
	src, ok := in.remoteAddr()
	if !ok {
		return "addr:unknown", "unknown source"
	}
	a := src.Addr().Unmap()
	if p.trusted(in) {
		if fwd, ok := p.forwardedFor(in); ok {
			a = fwd
		}
	}
	if a.Is6() {
		pfx, _ := a.Prefix(64)
		return "addr:" + pfx.String(), "source " + pfx.String()
	}
	return "addr:" + a.String(), "source " + a.String()
}

// forwardedFor is the client address a trusted proxy forwarded: the
// right-most X-Forwarded-For entry that is not itself a trusted proxy
// (entries further left are whatever the client claimed).
func (p *Proxy) forwardedFor(in inbound) (netip.Addr, bool) {
	xff, n := in.header("X-Forwarded-For")
	if n != 1 {
		return netip.Addr{}, false // several lines: which is last is net/http's guess
	}
	parts := strings.Split(xff, ",")
	for i := len(parts) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(parts[i]))
		if err != nil {
			return netip.Addr{}, false
		}
		a = a.Unmap()
		if !p.trustedAddr(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (p *Proxy) trustedAddr(a netip.Addr) bool {
	for _, pr := range p.cfg.TrustedProxies {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// limit runs both rate limits for an admitted request; false with the
// refusal filled in when one is over.
func (p *Proxy) limit(in inbound, v *verdict) bool {
	var res *rate.Reservation
	if p.clients != nil {
		key, who := p.clientKey(in, v)
		var wait time.Duration
		var ok bool
		if res, wait, ok = p.clients.reserve(key); !ok {
			p.limited.WithLabelValues(p.hashLabel(v.hash)).Inc()
			v.code, v.retryAfter = 429, retrySeconds(wait)
			v.refusal = apiError{Error: "Rate limit exceeded", Reason: "client",
				Rule: fmt.Sprintf("%d per minute per client (%s)", p.cfg.PerClientPerMinute, who)}
			return false
		}
	}
	if wait, ok := p.allow(v.hash); !ok {
		if res != nil {
			res.Cancel()
		}
		p.limited.WithLabelValues(p.hashLabel(v.hash)).Inc()
		v.code, v.retryAfter = 429, retrySeconds(wait)
		v.refusal = apiError{Error: "Rate limit exceeded", Reason: "registry hash",
			Rule: fmt.Sprintf("%d per minute per registry hash", p.cfg.PerMinute)}
		return false
	}
	return true
}

func retrySeconds(d time.Duration) int { return int(d.Seconds()) + 1 }
