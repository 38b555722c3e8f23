package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/regedge/regedge/internal/codec"
)

// BenchmarkXDP measures the XDP program per packet with Program.Benchmark
// (BPF_PROG_TEST_RUN, kernel-timed), next to a program that only returns
// XDP_PASS, measured in the same run: the harness floor. Each sub-benchmark
// reports kernel ns per packet and the ratio to the floor.
//
//	go test ./internal/loader -run '^$' -bench BenchmarkXDP -benchtime 5x
func BenchmarkXDP(b *testing.B) {
	o, floor := benchObjects(b)

	bulk, _ := codec.Bulk(codec.Entry{Field: codec.FieldTerminalMode, Value: 2}, codec.Entry{Field: codec.FieldRows, Value: 40}, codec.Entry{Field: codec.FieldCols, Value: 120})
	bulk16 := make([]codec.Entry, codec.MaxBulkEntries)
	for i := range bulk16 {
		bulk16[i] = codec.Entry{Field: codec.FieldRows, Value: 24}
	}
	big, _ := codec.Bulk(bulk16...)
	def := codec.DefaultState()
	badSum := validDatagram()
	badSum[len(badSum)-1] ^= 1
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"valid-update", busPacket(false, 0, validDatagram())},
		{"valid-update-ipv6-vlan", busPacket(true, 1, validDatagram())},
		{"valid-bulk3", busPacket(false, 0, codec.AppendDatagram(nil, def, &bulk))},
		{"valid-bulk16", busPacket(false, 0, codec.AppendDatagram(nil, def, &big))},
		{"invalid-checksum", busPacket(false, 0, badSum)},
		{"plain-tcp", tcpPacket(false, 40000, 443, 0x18, "GET / HTTP/1.1\r\n\r\n")},
		{"plain-udp", packet{src: testSrc4, dst: testDst4, sport: 5353, dport: 53, payload: make([]byte, 64)}.bytes()},
	}
	const repeat = 200000
	// Several rounds, interleaving floor and program; medians of each.
	measure := func(p *ebpf.Program, pkt []byte) time.Duration {
		_, d, err := p.Benchmark(pkt, repeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	median := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			// Each round measures the floor right before the program, and
			// the ratio is taken per round: the VM's speed drifts between
			// rounds more than within one.
			var fl, pr []time.Duration
			var ratios []float64
			for i := 0; i < b.N; i++ {
				f, p := measure(floor, tc.pkt), measure(o.XDP(), tc.pkt)
				fl, pr = append(fl, f), append(pr, p)
				ratios = append(ratios, float64(p)/float64(f))
			}
			sort.Float64s(ratios)
			b.ReportMetric(float64(median(fl).Nanoseconds()), "floor-ns/pkt")
			b.ReportMetric(float64(median(pr).Nanoseconds()), "ns/pkt")
			b.ReportMetric(ratios[len(ratios)/2], "x-floor")
		})
	}
}

// BenchmarkXDPObjects compares builds of the XDP program in one run: each
// object file in REGEDGE_XDP_OBJECTS (comma-separated, e.g. xdp_bpfel.o of
// earlier commits, `git show REV:internal/loader/xdp_bpfel.o > old.o`) is
// loaded with this build's maps and settings, and every round measures the
// floor and then each object on the same packet, so the VM's drift hits
// them alike. Per object it reports the median and the interquartile mean
// of the per-round ratios (objN-x-floor, objN-x-floor-iqm; N in the order
// given). Object files must define the same maps as this build; relative
// paths are from internal/loader, where go test runs.
//
//	REGEDGE_XDP_OBJECTS=old.o,new.o go test ./internal/loader -run '^$' -bench XDPObjects -benchtime 101x
func BenchmarkXDPObjects(b *testing.B) {
	list := os.Getenv("REGEDGE_XDP_OBJECTS")
	if list == "" {
		b.Skip("REGEDGE_XDP_OBJECTS names no object files to compare")
	}
	// Objects from before the local list ignore it; their config_map
	// layout differs, and they cannot be compared here.
	o, floor := benchObjects(b)
	ours := map[string]*ebpf.Map{
		xdpMapAllowV4: o.xdp.AllowV4, xdpMapAllowV6: o.xdp.AllowV6, xdpMapBlockV4: o.xdp.BlockV4,
		xdpMapBlockV6: o.xdp.BlockV6, xdpMapConfigMap: o.xdp.ConfigMap, xdpMapRegistrySlots: o.xdp.RegistrySlots,
		xdpMapRegistryStats: o.xdp.RegistryStats, xdpMapScratchMap: o.xdp.ScratchMap,
		xdpMapSynBuckets: o.xdp.SynBuckets, xdpMapXdpStats: o.xdp.XdpStats,
	}
	var progs []*ebpf.Program
	for i, path := range strings.Split(list, ",") {
		spec, err := ebpf.LoadCollectionSpec(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := spec.Maps[configSection]; ok { // builds before config by address have none
			if err := configByAddress(spec); err != nil {
				b.Fatal(path, err)
			}
		}
		// An older build lacks the newer constants, and does not use them.
		if err := applyXDPOptions(spec, DefaultOptions()); err != nil && !errors.Is(err, errNoConstant) {
			b.Fatal(path, err)
		}
		repl := map[string]*ebpf.Map{}
		for name := range spec.Maps {
			if m, ok := ours[name]; ok {
				repl[name] = m
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			b.Fatal(path, err)
		}
		defer coll.Close()
		progs = append(progs, coll.Programs[xdpProgRegedgeXdp])
		b.Logf("obj%d: %s", i+1, filepath.Base(path))
	}

	badSum := validDatagram()
	badSum[len(badSum)-1] ^= 1
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"valid-update", busPacket(false, 0, validDatagram())},
		{"invalid-checksum", busPacket(false, 0, badSum)},
		{"plain-tcp", tcpPacket(false, 40000, 443, 0x18, "GET / HTTP/1.1\r\n\r\n")},
	}
	const repeat = 200000
	measure := func(p *ebpf.Program, pkt []byte) time.Duration {
		_, d, err := p.Benchmark(pkt, repeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			ratios := make([][]float64, len(progs))
			for i := 0; i < b.N; i++ {
				f := measure(floor, tc.pkt)
				for j, p := range progs {
					ratios[j] = append(ratios[j], float64(measure(p, tc.pkt))/float64(f))
				}
			}
			for j, r := range ratios {
				sort.Float64s(r)
				mid := r[len(r)/4 : len(r)-len(r)/4]
				var sum float64
				for _, x := range mid {
					sum += x
				}
				b.ReportMetric(r[len(r)/2], fmt.Sprintf("obj%d-x-floor", j+1))
				b.ReportMetric(sum/float64(len(mid)), fmt.Sprintf("obj%d-x-floor-iqm", j+1))
			}
		})
	}
}

// benchObjects loads the programs as a node runs them for the benchmarks,
// and the floor: a program that only returns XDP_PASS. The datagrams'
// registry is a configured one (the others count as plain passes), and the
// packets' destinations are the node's own addresses, on the local list as
// the agent's address watcher keeps it: a drop is known to be ours without
// the FIB (docs/kernel.md).
func benchObjects(b *testing.B) (*Objects, *ebpf.Program) {
	b.Helper()
	o := loadForTest(b)
	knowRegistries(b, o, codec.DefaultState().RegistryHash)
	if err := o.SetLocalAddrs([]netip.Addr{testDst4, testDst6}); err != nil {
		b.Fatal(err)
	}
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { floor.Close() })
	return o, floor
}
