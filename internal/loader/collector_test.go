package loader

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollectorExportsKernelCounters(t *testing.T) {
	o := loadForTest(t)
	bad := validDatagram()
	bad[len(bad)-1] ^= 1
	runXDP(t, o, busPacket(false, 0, bad))
	runXDP(t, o, busPacket(false, 0, validDatagram()))
	runXDP(t, o, busPacket(true, 0, validDatagram()))

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(o))
	want := `
# HELP regedge_kernel_drops_total Packets dropped in the kernel, by hook and reason.
# TYPE regedge_kernel_drops_total counter
regedge_kernel_drops_total{hook="xdp",reason="blocked"} 0
regedge_kernel_drops_total{hook="xdp",reason="checksum"} 1
regedge_kernel_drops_total{hook="xdp",reason="field"} 0
regedge_kernel_drops_total{hook="xdp",reason="fragment"} 0
regedge_kernel_drops_total{hook="xdp",reason="length"} 0
regedge_kernel_drops_total{hook="xdp",reason="malformed"} 0
regedge_kernel_drops_total{hook="xdp",reason="source"} 0
regedge_kernel_drops_total{hook="xdp",reason="state"} 0
regedge_kernel_drops_total{hook="xdp",reason="synflood"} 0
regedge_kernel_drops_total{hook="xdp",reason="type"} 0
regedge_kernel_drops_total{hook="xdp",reason="unsigned"} 0
regedge_kernel_drops_total{hook="xdp",reason="value"} 0
regedge_kernel_drops_total{hook="xdp",reason="version"} 0
# HELP regedge_registry_packets_total Packets of valid bus datagrams and of proxy connections (counted by socket, GSO segments each), by registry hash and direction.
# TYPE regedge_registry_packets_total counter
regedge_registry_packets_total{direction="ingress",registry_hash="0xa1b2c3d4"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "regedge_kernel_drops_total", "regedge_registry_packets_total"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "regedge_kernel_packets_total"); err != nil || n != 4 {
		t.Fatalf("regedge_kernel_packets_total series: %d, %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP regedge_kernel_scrape_errors 1 when reading the kernel counters failed during this scrape.
# TYPE regedge_kernel_scrape_errors gauge
regedge_kernel_scrape_errors 0
`), "regedge_kernel_scrape_errors"); err != nil {
		t.Fatal(err)
	}
}
