package loader

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes the kernel counters of docs/metrics.md, summed over CPUs at
// scrape time: regedge_kernel_drops_total{hook,reason},
// regedge_kernel_packets_total{hook,verdict},
// regedge_registry_packets_total and regedge_registry_bytes_total
// {registry_hash,direction}, and regedge_steered_connections_total.
type Collector struct {
	o *Objects

	drops, packets, regPackets, regBytes, steered, scrapeErrors, blocked *prometheus.Desc
}

// NewCollector returns a collector reading o.
func NewCollector(o *Objects) *Collector {
	return &Collector{
		o:            o,
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
	for _, r := range regs {
		dir := "ingress"
		if r.Egress {
			dir = "egress"
		}
		hash := fmt.Sprintf("0x%08x", r.Hash)
		ch <- prometheus.MustNewConstMetric(c.regPackets, prometheus.CounterValue, float64(r.Packets), hash, dir)
		ch <- prometheus.MustNewConstMetric(c.regBytes, prometheus.CounterValue, float64(r.Bytes), hash, dir)
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
