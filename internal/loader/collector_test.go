package loader

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/codec"
)

func TestCollectorExportsKernelCounters(t *testing.T) {
	o := loadForTest(t)
	knowRegistries(t, o, 0xa1b2c3d4)
	bad := validDatagram()
	bad[len(bad)-1] ^= 1
	runXDP(t, o, busPacket(false, 0, bad))
	runXDP(t, o, busPacket(false, 0, validDatagram()))
	runXDP(t, o, busPacket(true, 0, validDatagram()))

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(o, foldKnown(0xa1b2c3d4)))
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

// foldKnown labels registry hashes as the proxy does (userproxy
// RegistryLabel): a known hash by itself, every other one "other".
func foldKnown(known ...uint32) func(uint32) string {
	return func(h uint32) string {
		if slices.Contains(known, h) {
			return fmt.Sprintf("0x%08x", h)
		}
		return "other"
	}
}

// TestCollectorFoldsUnknownRegistryHashes: valid bus datagrams of a
// configured hash and of 300 others the kernel has entries for (registries
// an earlier config knew; more than the 256 per-CPU slots: some land in the
// hash map) go through the real XDP program. The registry series are the
// configured hash's and one "other" per direction, whose value is the sum of
// every other hash's counters; more such hashes later raise it, never add a
// series.
func TestCollectorFoldsUnknownRegistryHashes(t *testing.T) {
	o := loadForTest(t)
	const known = 0xa1b2c3d4
	send := func(hash uint32, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			s := codec.DefaultState()
			s.RegistryHash = hash
			f := codec.Update(codec.FieldRows, uint64(10+i))
			if _, r := runXDP(t, o, busPacket(false, 0, codec.AppendDatagram(nil, s, &f))); r != ReasonOK {
				t.Fatalf("datagram of 0x%08x: %s", hash, verdictWord(r))
			}
		}
	}
	rng := rand.New(rand.NewPCG(17, 17))
	madeUp := func(n int) {
		hs := make([]uint32, n)
		for i := range hs {
			if hs[i] = rng.Uint32(); hs[i] == known {
				hs[i]++
			}
		}
		knowRegistries(t, o, hs...)
		for _, h := range hs {
			send(h, 1)
		}
	}
	knowRegistries(t, o, known)
	send(known, 3)
	madeUp(300)

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(o, foldKnown(known, 0x1111)))
	// Bytes: the raw counters, summed by label, to compare against.
	rawBytes := func() (knownB, otherB uint64) {
		cs, err := o.RegistryCounters()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Hash == known {
				knownB += c.Bytes
			} else {
				otherB += c.Bytes
			}
		}
		return
	}
	check := func(otherPackets int) float64 {
		t.Helper()
		kb, ob := rawBytes()
		want := fmt.Sprintf(`
# HELP regedge_registry_packets_total Packets of valid bus datagrams and of proxy connections (counted by socket, GSO segments each), by registry hash and direction.
# TYPE regedge_registry_packets_total counter
regedge_registry_packets_total{direction="ingress",registry_hash="0xa1b2c3d4"} 3
regedge_registry_packets_total{direction="ingress",registry_hash="other"} %d
# HELP regedge_registry_bytes_total Bytes of valid bus datagrams and of proxy connections (skb length, counted by socket), by registry hash and direction.
# TYPE regedge_registry_bytes_total counter
regedge_registry_bytes_total{direction="ingress",registry_hash="0xa1b2c3d4"} %d
regedge_registry_bytes_total{direction="ingress",registry_hash="other"} %d
`, otherPackets, kb, ob)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "regedge_registry_packets_total", "regedge_registry_bytes_total"); err != nil {
			t.Fatal(err)
		}
		return float64(ob)
	}
	before := check(300)
	madeUp(50)
	if after := check(350); after <= before {
		t.Errorf("other bytes %v -> %v: not monotonic", before, after)
	}
}

// knowRegistries gives hashes their entries in the bus registry counters,
// as the agent does for the configured ones (XDP counts no other).
func knowRegistries(t testing.TB, o *Objects, hashes ...uint32) {
	t.Helper()
	if err := o.KnowRegistries(hashes); err != nil {
		t.Fatal(err)
	}
}
