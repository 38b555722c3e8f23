package loader

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes the kernel counters of docs/metrics.md, summed over CPUs at
// scrape time: regedge_kernel_drops_total{hook,reason},
// regedge_kernel_packets_total{hook,verdict},
// regedge_registry_packets_total and regedge_registry_bytes_total
// {registry_hash,direction}, and regedge_steered_connections_total.
type Collector struct {
	o     *Objects
	label func(hash uint32) string

	drops, packets, regPackets, regBytes, steered, scrapeErrors, blocked *prometheus.Desc
}

// NewCollector returns a collector reading o. label gives a registry hash's
// registry_hash label: the proxy's (userproxy.Proxy.RegistryLabel), so the
// kernel's series fold exactly as the proxy's do. Hashes come from whoever
// sends a datagram or a request; a label per hash would let a sender grow
// the series without bound, so label maps the hashes the config does not
// know to one label ("other"), and the counters of the hashes sharing a
// label are summed (each is monotonic, so the sum is).
func NewCollector(o *Objects, label func(hash uint32) string) *Collector {
	return &Collector{
		o:            o,
		label:        label,
		drops:        prometheus.NewDesc("regedge_kernel_drops_total", "Packets dropped in the kernel, by hook and reason.", []string{"hook", "reason"}, nil),
		packets:      prometheus.NewDesc("regedge_kernel_packets_total", "Packets judged in the kernel, by hook and verdict.", []string{"hook", "verdict"}, nil),
		regPackets:   prometheus.NewDesc("regedge_registry_packets_total", "Packets of valid bus datagrams and of proxy connections (counted by socket, GSO segments each), by registry hash and direction.", []string{"registry_hash", "direction"}, nil),
		regBytes:     prometheus.NewDesc("regedge_registry_bytes_total", "Bytes of valid bus datagrams and of proxy connections (skb length, counted by socket), by registry hash and direction.", []string{"registry_hash", "direction"}, nil),
		steered:      prometheus.NewDesc("regedge_steered_connections_total", "Connections sk_lookup handed to the proxy socket (result: steered, nosocket).", []string{"result"}, nil),
		scrapeErrors: prometheus.NewDesc("regedge_kernel_scrape_errors", "1 when reading the kernel counters failed during this scrape.", nil, nil),
		blocked:      prometheus.NewDesc("regedge_blocklist_entries", "Sources on the token-failure block list (XDP drops their TCP to the proxy ports), expired entries not counted.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.drops, c.packets, c.regPackets, c.regBytes, c.steered, c.scrapeErrors, c.blocked} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	failed := 0.0
	for _, hook := range []struct {
		name string
		read func() ([NumReasons]uint64, error)
	}{{"xdp", c.o.Counters}, {"tc", c.o.TCCounters}} {
		stats, err := hook.read()
		if err != nil {
			failed = 1
			continue
		}
		var dropped uint64
		for r := ReasonLength; r < NumReasons; r++ {
			dropped += stats[r]
			if hook.name == "xdp" { // TC never drops
				ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(stats[r]), hook.name, r.String())
			}
		}
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(stats[ReasonOK]), hook.name, "pass")
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(dropped), hook.name, "drop")
	}
	regs, err := c.o.RegistryCounters()
	if err != nil {
		failed = 1
	}
	type series struct{ label, dir string }
	folded := map[series]*RegistryCounter{}
	var order []series
	for _, r := range regs {
		k := series{c.label(r.Hash), "ingress"}
		if r.Egress {
			k.dir = "egress"
		}
		sum := folded[k]
		if sum == nil {
			sum = &RegistryCounter{}
			folded[k] = sum
			order = append(order, k)
		}
		sum.Packets += r.Packets
		sum.Bytes += r.Bytes
	}
	for _, k := range order {
		ch <- prometheus.MustNewConstMetric(c.regPackets, prometheus.CounterValue, float64(folded[k].Packets), k.label, k.dir)
		ch <- prometheus.MustNewConstMetric(c.regBytes, prometheus.CounterValue, float64(folded[k].Bytes), k.label, k.dir)
	}
	if n, err := c.o.blockListSize(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.blocked, prometheus.GaugeValue, float64(n))
	} else {
		failed = 1
	}
	if steered, noSocket, err := c.o.SteerCounters(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.steered, prometheus.CounterValue, float64(steered), "steered")
		ch <- prometheus.MustNewConstMetric(c.steered, prometheus.CounterValue, float64(noSocket), "nosocket")
	} else {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.GaugeValue, failed)
}
