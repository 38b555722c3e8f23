package userproxy

import "net/netip"

// blockExempt: a is in Config.BlockExempt. A load balancer in front of
// the edge carries every client's failures: blocking it would cut every
// client; a config bus source is an operator's.
func (p *Proxy) blockExempt(a netip.Addr) bool {
	for _, pr := range p.cfg.BlockExempt {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}
