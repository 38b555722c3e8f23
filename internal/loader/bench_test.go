package loader

import (
	"sort"
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
	o := loadForTest(b)
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()

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
