package loader

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/regedge/regedge/internal/codec"
)

func tcpPacket(v6 bool, sport, dport uint16, flags byte, payload string) []byte {
	p := packet{src: testSrc4, dst: testDst4, sport: sport, dport: dport, tcp: true, tcpFlags: flags, payload: []byte(payload)}
	if v6 {
		p.src, p.dst = testSrc6, testDst6
	}
	return p.bytes()
}

func runTC(t *testing.T, prog *ebpf.Program, pkt []byte) {
	t.Helper()
	if _, err := prog.Run(&ebpf.RunOptions{Data: pkt}); err != nil {
		t.Fatalf("Program.Run: %v", err)
	}
}

const (
	tcpPSHACK = 0x18
	tcpFINACK = 0x11
)

func request(headers ...string) string {
	return "GET /left-pad HTTP/1.1\r\nHost: edge:4873\r\n" + strings.Join(headers, "") + "Accept: */*\r\n\r\n"
}

// TestTCFlowTags sends a request's first segment through the ingress program
// and reads the tag back by 4-tuple, as the proxy does.
func TestTCFlowTags(t *testing.T) {
	o := loadForTest(t)
	own := codec.DefaultState()
	own.RegistryHash = 0x00c0ffee
	if err := o.SetOwnState(own); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("X-Padding: "+strings.Repeat("a", 80)+"\r\n", 12) // pushes a header past the 1024-byte scan
	for i, tc := range []struct {
		name    string
		payload string
		want    FlowTag // LastSeen ignored
	}{
		{"dump", request("X-Bun-Config-Dump: 0x01a1b2c3d40000000702185000\r\n"),
			FlowTag{RegistryHash: 0xa1b2c3d4, Version: 1, FeatureFlags: 7, Verdict: ReasonOK, Source: TagDump}},
		{"dump, lower-case name and upper-case hex", request("x-bun-config-dump:0X01DEADBEEF0000000102185000\r\n"),
			FlowTag{RegistryHash: 0xdeadbeef, Version: 1, FeatureFlags: 1, Verdict: ReasonOK, Source: TagDump}},
		{"dump wins over the hash header", request("X-Bun-Registry-Hash: 0x11111111\r\n", "X-Bun-Config-Dump: 0x01222222220000000702185000\r\n"),
			FlowTag{RegistryHash: 0x22222222, Version: 1, FeatureFlags: 7, Verdict: ReasonOK, Source: TagDump}},
		{"hash header alone takes the rest from the agent", request("X-BUN-REGISTRY-HASH:  0x0000abcd\r\n"),
			FlowTag{RegistryHash: 0xabcd, Version: 1, FeatureFlags: 7, Verdict: ReasonOK, Source: TagHash}},
		{"no config headers: the agent's state", request(),
			FlowTag{RegistryHash: 0x00c0ffee, Version: 1, FeatureFlags: 7, Verdict: ReasonOK, Source: TagNone}},
		{"dump breaking a rule", request("X-Bun-Config-Dump: 0x01a1b2c3d40000000702005000\r\n"),
			FlowTag{RegistryHash: 0xa1b2c3d4, Version: 1, FeatureFlags: 7, Verdict: ReasonState, Source: TagDump}},
		{"dump of an unsupported version", request("X-Bun-Config-Dump: 0x02a1b2c3d40000000702185000\r\n"),
			FlowTag{RegistryHash: 0xa1b2c3d4, Version: 2, FeatureFlags: 7, Verdict: ReasonVersion, Source: TagDump}},
		{"dump too short", request("X-Bun-Config-Dump: 0x01a1b2c3d4\r\n"),
			FlowTag{Verdict: ReasonMalformed, Source: TagDump}},
		{"dump not hex", request("X-Bun-Config-Dump: 0x01a1b2c3d4000000070218500z\r\n"),
			FlowTag{Verdict: ReasonMalformed, Source: TagDump}},
		{"header in the body is not a header", "POST / HTTP/1.1\r\nHost: e\r\n\r\nX-Bun-Config-Dump: 0x01a1b2c3d40000000702185000\r\n",
			FlowTag{RegistryHash: 0x00c0ffee, Version: 1, FeatureFlags: 7, Verdict: ReasonOK, Source: TagNone}},
		{"header past the scan window", request(long, "X-Bun-Config-Dump: 0x01a1b2c3d40000000702185000\r\n"),
			FlowTag{RegistryHash: 0x00c0ffee, Version: 1, FeatureFlags: 7, Verdict: ReasonOK, Source: TagNone}},
	} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%v", tc.name, v6), func(t *testing.T) {
				sport := uint16(50000 + 2*i)
				if v6 {
					sport++
				}
				runTC(t, o.TCIngress(), tcpPacket(v6, sport, 4873, tcpPSHACK, tc.payload))
				client, server := netip.AddrPortFrom(testSrc4, sport), netip.AddrPortFrom(testDst4, 4873)
				if v6 {
					client, server = netip.AddrPortFrom(testSrc6, sport), netip.AddrPortFrom(testDst6, 4873)
				}
				got, ok, err := o.FlowTag(client, server)
				if err != nil || !ok {
					t.Fatalf("FlowTag = %v, %v", ok, err)
				}
				if got.LastSeen == 0 {
					t.Error("tag has no last-seen time")
				}
				got.LastSeen = 0
				if got != tc.want {
					t.Fatalf("tag %+v, want %+v", got, tc.want)
				}
			})
		}
	}
}

func TestTCNoTagForOtherTraffic(t *testing.T) {
	o := loadForTest(t)
	for name, pkt := range map[string][]byte{
		"other port":      tcpPacket(false, 50100, 8080, tcpPSHACK, request("X-Bun-Config-Dump: 0x01a1b2c3d40000000702185000\r\n")),
		"no payload":      tcpPacket(false, 50101, 4873, 0x02, ""),
		"udp to the port": busPacket(false, 0, []byte("X")),
	} {
		t.Run(name, func(t *testing.T) {
			runTC(t, o.TCIngress(), pkt)
			_ = name
		})
	}
	for _, sport := range []uint16{50100, 50101} {
		for _, dport := range []uint16{8080, 4873} {
			if _, ok, _ := o.FlowTag(netip.AddrPortFrom(testSrc4, sport), netip.AddrPortFrom(testDst4, dport)); ok {
				t.Errorf("tag written for %d -> %d", sport, dport)
			}
		}
	}
}

// TestTCCountsBothDirections: a tagged flow's packets are counted per
// registry hash, ingress and egress, and FIN removes the tag.
func TestTCCountsBothDirections(t *testing.T) {
	o := loadForTest(t)
	req := tcpPacket(false, 50200, 4873, tcpPSHACK, request("X-Bun-Config-Dump: 0x01000042420000000702185000\r\n"))
	runTC(t, o.TCIngress(), req)
	runTC(t, o.TCIngress(), tcpPacket(false, 50200, 4873, tcpPSHACK, "more body"))
	resp := packet{src: testDst4, dst: testSrc4, sport: 4873, dport: 50200, tcp: true, tcpFlags: tcpPSHACK, payload: []byte("HTTP/1.1 200 OK\r\n\r\n")}
	runTC(t, o.TCEgress(), resp.bytes())

	counters, err := o.RegistryCounters()
	if err != nil {
		t.Fatal(err)
	}
	var in, out *RegistryCounter
	for i := range counters {
		if counters[i].Hash == 0x4242 {
			if counters[i].Egress {
				out = &counters[i]
			} else {
				in = &counters[i]
			}
		}
	}
	if in == nil || in.Packets != 2 || out == nil || out.Packets != 1 || out.Bytes == 0 {
		t.Fatalf("registry counters %+v", counters)
	}
	runTC(t, o.TCIngress(), tcpPacket(false, 50200, 4873, tcpFINACK, ""))
	if _, ok, _ := o.FlowTag(netip.AddrPortFrom(testSrc4, 50200), netip.AddrPortFrom(testDst4, 4873)); ok {
		t.Fatal("tag survived the client's FIN")
	}
}

func TestTrimFlowTags(t *testing.T) {
	o := loadForTest(t)
	runTC(t, o.TCIngress(), tcpPacket(false, 50300, 4873, tcpPSHACK, request()))
	if n, err := o.TrimFlowTags(1 << 62); err != nil || n != 0 {
		t.Fatalf("trim with a huge idle time: %d, %v", n, err)
	}
	if n, err := o.TrimFlowTags(0); err != nil || n != 1 {
		t.Fatalf("trim with zero idle time: %d, %v", n, err)
	}
	if _, ok, _ := o.FlowTag(netip.AddrPortFrom(testSrc4, 50300), netip.AddrPortFrom(testDst4, 4873)); ok {
		t.Fatal("tag survived the trim")
	}
}
