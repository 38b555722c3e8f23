package loader

import (
	"testing"

	"github.com/cilium/ebpf"
)

func tcpPacket(v6 bool, sport, dport uint16, flags byte, payload string) []byte {
	p := packet{src: testSrc4, dst: testDst4, sport: sport, dport: dport, tcp: true, tcpFlags: flags, payload: []byte(payload)}
	if v6 {
		p.src, p.dst = testSrc6, testDst6
	}
	return p.bytes()
}

const tcpPSHACK = 0x18

// TestTCCountsNothingWithoutAConnection: TC counts proxy connections by
// their socket; packets of other ports, and packets to the proxy port that
// no socket of this namespace has, move no counter (Program.Run has no
// sockets: the real paths are in sockacct_test.go).
func TestTCCountsNothingWithoutAConnection(t *testing.T) {
	o := loadForTest(t)
	for name, pkt := range map[string][]byte{
		"other port":          tcpPacket(false, 50100, 8080, tcpPSHACK, "GET / HTTP/1.1\r\n\r\n"),
		"proxy port, no conn": tcpPacket(false, 50101, 4873, tcpPSHACK, "GET / HTTP/1.1\r\n\r\n"),
		"proxy port, IPv6":    tcpPacket(true, 50102, 4873, 0x02, ""),
		"udp to the port":     busPacket(false, 0, []byte("X")),
	} {
		before, _ := o.TCCounters()
		for _, prog := range []*ebpf.Program{o.TCIngress(), o.TCEgress()} {
			if _, err := prog.Run(&ebpf.RunOptions{Data: pkt}); err != nil {
				t.Fatalf("%s: Program.Run: %v", name, err)
			}
		}
		after, _ := o.TCCounters()
		if after != before {
			t.Errorf("%s: TC counters moved: %v -> %v", name, before, after)
		}
	}
	if regs, err := o.RegistryCounters(); err != nil || len(regs) != 0 {
		t.Errorf("registry counters %v, %v; want none", regs, err)
	}
}
