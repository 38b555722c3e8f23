package userproxy

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/regedge/regedge/internal/codec"
)

// SelfProbePath is answered by the proxy itself, on both front ends,
// before any check: the agent's readiness asks it through the proxy's own
// listener, so that "ready" means a connection to the proxy port gets an
// answer. It is neither counted nor logged, and says nothing but "ok".
const SelfProbePath = "/-/regedge/ping"

var selfProbeBody = []byte("{\"ok\":true}\n")

// answerSelfProbe writes the probe's answer on the fast path.
func answerSelfProbe(bw *bufio.Writer, method string, closeConn bool) bool {
	writeStatusLine(bw, http.StatusOK)
	bw.WriteString("Content-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(selfProbeBody)))
	bw.WriteString("\r\n")
	if closeConn {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if method != http.MethodHead {
		bw.Write(selfProbeBody)
	}
	return bw.Flush() == nil
}

// serveSelfProbe writes the probe's answer on the net/http front end.
func serveSelfProbe(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(selfProbeBody)
}

// UpstreamHealth is one upstream as /health reports it.
type UpstreamHealth struct {
	Name    string `json:"name"`    // host:port
	Hash    string `json:"hash"`    // 0x%08x
	Breaker string `json:"breaker"` // closed, open, half-open
	Up      bool   `json:"up"`      // the last exchange reached it
	// LastExchange is when the last request or probe ended (RFC 3339;
	// empty before any).
	LastExchange string `json:"lastExchange,omitempty"`
	// Available: requests may reach it now (breaker closed; without a
	// breaker, the last exchange got through).
	Available bool `json:"available"`
}

// Upstreams reports every upstream, in configuration order.
func (p *Proxy) Upstreams() []UpstreamHealth {
	out := make([]UpstreamHealth, 0, len(p.cfg.Upstreams))
	for i := range p.cfg.Upstreams {
		r := p.routes[p.cfg.Upstreams[i].Hash]
		ok, at := r.br.lastExchange()
		h := UpstreamHealth{Name: upstreamName(r), Hash: p.labels[r.Hash], Breaker: r.br.state(), Up: ok, Available: r.br.available()}
		if !at.IsZero() {
			h.LastExchange = at.UTC().Format(time.RFC3339)
		}
		out = append(out, h)
	}
	return out
}

// RunProbes keeps the upstreams' health true without traffic, until ctx
// is done. Every second it looks at each upstream: one whose breaker is
// open and whose cooldown is over is probed (the breaker's half-open
// probe, so that an edge no client reaches, readiness failing, still
// recovers); one that has served requests but has had no exchange for
// idle is probed as well (idle > 0), so that an idle edge notices an
// upstream that went away. An upstream never used is never probed: an
// edge nobody uses sends nothing anywhere. A probe is GET /-/ping (npm's
// ping; any answer, whatever its status, means reachable) on a new
// connection, with the upstream's own timeout.
func (p *Proxy) RunProbes(ctx context.Context, idle time.Duration) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	busy := map[*route]bool{}
	done := make(chan *route)
	for {
		select {
		case <-ctx.Done():
			for len(busy) > 0 { // wait for the probes in flight (bounded by their timeouts)
				delete(busy, <-done)
			}
			return
		case r := <-done:
			delete(busy, r)
		case <-t.C:
			for _, r := range p.routes {
				if busy[r] || !p.probeDue(r, idle) {
					continue
				}
				busy[r] = true
				go func() { p.probe(ctx, r); done <- r }()
			}
		}
	}
}

// probeDue: r's breaker waits for a probe, or r has been idle too long.
func (p *Proxy) probeDue(r *route, idle time.Duration) bool {
	if r.br.state() == "half-open" {
		return true
	}
	_, at := r.br.lastExchange()
	return idle > 0 && !at.IsZero() && r.br.available() && time.Since(at) > idle
}

// probe sends one GET /-/ping to r and judges the upstream by it.
func (p *Proxy) probe(ctx context.Context, r *route) {
	if r.br.state() == "half-open" {
		if ok, _ := r.br.allow(); !ok {
			return // a request is the probe already
		}
	}
	req := []byte("GET " + r.prefix + "/-/ping HTTP/1.1\r\nHost: " + r.hostHeader + "\r\nUser-Agent: regedge-probe\r\n")
	if r.AuthToken != "" {
		req = append(req, "Authorization: Bearer "+r.AuthToken+"\r\n"...)
	}
	req = append(req, codec.HeaderRequestID+": "+codec.NewRequestID()+"\r\nConnection: close\r\n\r\n"...)
	uc, err := r.pool.dial(ctx)
	if err == nil {
		stop := context.AfterFunc(ctx, func() { uc.Close() }) // shutdown does not wait for a timeout
		var h upstreamHead
		err = uc.roundTrip(req, r.timeout, &h)
		stop()
		uc.Close()
	}
	if ctx.Err() != nil {
		r.br.abandon()
		return
	}
	if err != nil {
		p.log.Debug("upstream probe failed", "upstream", upstreamName(r), "err", err)
	}
	r.br.done(err == nil)
}
