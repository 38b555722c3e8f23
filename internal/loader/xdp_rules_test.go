package loader

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
)

func validDatagram() []byte {
	f := codec.Update(codec.FieldRows, 40)
	return codec.AppendDatagram(nil, codec.DefaultState(), &f)
}

// TestXDPOwnPacketsLinuxWouldDrop: a datagram to the bus port whose IP or
// UDP header Linux itself would drop is dropped as malformed; a first
// fragment to the bus as fragment. Each case is otherwise a valid datagram.
func TestXDPOwnPacketsLinuxWouldDrop(t *testing.T) {
	o := loadForTest(t)
	good4 := busPacket(false, 0, validDatagram())
	const l3 = 14 // IPv4 header offset without VLAN
	frag := func(off uint16, mf bool, dport uint16) []byte {
		p := packet{src: testSrc4, dst: testDst4, sport: 40000, dport: dport, payload: validDatagram(), fragOff: off, moreFrags: mf}
		return p.bytes()
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want Reason
	}{
		{"valid datagram", good4, ReasonOK},
		// The header checksum is left to the stack (Katran's choice): the
		// datagram is judged on its content, then Linux drops it.
		{"IPv4 header checksum wrong", mod(good4, func(b []byte) { b[l3+10] ^= 1 }), ReasonOK},
		{"IPv4 version 5", mod(good4, func(b []byte) { b[l3] = 0x55; fixIPCsum(b, l3) }), ReasonMalformed},
		{"IPv4 total length past the frame", mod(good4, func(b []byte) { binary.BigEndian.PutUint16(b[l3+2:], 1000); fixIPCsum(b, l3) }), ReasonMalformed},
		{"IPv4 total length below the header", mod(good4, func(b []byte) { binary.BigEndian.PutUint16(b[l3+2:], 19); fixIPCsum(b, l3) }), ReasonMalformed},
		{"UDP length longer than the IP payload", mod(good4, func(b []byte) { binary.BigEndian.PutUint16(b[l3+24:], 200) }), ReasonMalformed},
		{"UDP length below 8", mod(good4, func(b []byte) { binary.BigEndian.PutUint16(b[l3+24:], 7) }), ReasonMalformed},
		{"UDP length 0 over IPv4", mod(good4, func(b []byte) { binary.BigEndian.PutUint16(b[l3+24:], 0) }), ReasonMalformed},
		{"IPv6 payload length past the frame", mod(busPacket(true, 0, validDatagram()), func(b []byte) { binary.BigEndian.PutUint16(b[l3+4:], 600) }), ReasonMalformed},
		{"first fragment to the bus port", frag(0, true, 4874), ReasonFragment},
	} {
		ret, got := runXDP(t, o, tc.pkt)
		if got != tc.want || ret != wantAction(tc.want) {
			t.Errorf("%s: action %d reason %s, want %s", tc.name, ret, verdictWord(got), verdictWord(tc.want))
		}
	}
}

// TestXDPPassesWhatIsNotOurs runs odd-but-legal packets, and packets whose
// owner cannot be told, through XDP: each passes untouched (the output
// frame equals the input) and no counter moves, drops or passes. On a
// shared node this is someone else's traffic and the stack judges it.
func TestXDPPassesWhatIsNotOurs(t *testing.T) {
	o := loadForTest(t)
	const l3 = 14
	dns := packet{src: testSrc4, dst: testDst4, sport: 5353, dport: 53, payload: []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")}
	// The first packet: a DNS query whose UDP length is shorter
	// than its IP payload. Linux trims the trailing bytes and accepts it.
	dnsTrailing := dns
	dnsTrailing.ipTrailer = []byte{0xde, 0xad, 0xbe, 0xef}
	// The second packet: an IPv6 SYN behind five destination-options
	// headers, deeper than XDP looks; to a proxy port, so the stack decides.
	synDeep := ipv6WithExt([][]byte{destOpts(), destOpts(), destOpts(), destOpts(), destOpts()},
		packet{src: testSrc6, dst: testDst6, sport: 40000, dport: 4873, tcp: true, tcpFlags: 0x02})
	icmpEcho := packet{src: testSrc4, dst: testDst4, rawProto: 1, payload: []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0}}
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"UDP to port 53, UDP length shorter than the IP payload", dnsTrailing.bytes()},
		{"IPv6 SYN to the proxy port behind five destination-options headers", synDeep},
		{"IPv6 UDP to port 53 behind five destination-options headers", ipv6WithExt([][]byte{destOpts(), destOpts(), destOpts(), destOpts(), destOpts()},
			packet{src: testSrc6, dst: testDst6, sport: 5353, dport: 53, payload: []byte("q")})},
		{"plain DNS query", dns.bytes()},
		{"IPv4 with options, UDP to port 53", packet{src: testSrc4, dst: testDst4, sport: 5353, dport: 53, payload: []byte("q"), ipOpts: []byte{1, 1, 1, 0}}.bytes()},
		{"IPv4 with 40 bytes of options, TCP to 443", packet{src: testSrc4, dst: testDst4, sport: 1, dport: 443, tcp: true, tcpFlags: 0x02, ipOpts: make([]byte, 40)}.bytes()},
		{"UDP checksum 0 (none) over IPv4", mod(dns.bytes(), func(b []byte) { b[l3+26], b[l3+27] = 0, 0 })},
		{"TCP with data offset 4 to port 443 (Linux drops it, not us)", mod(tcpPacket(false, 1, 443, 0x18, "x"), func(b []byte) { b[l3+20+12] = 4 << 4 })},
		{"IPv4 header checksum wrong, to port 53", mod(dns.bytes(), func(b []byte) { b[l3+10] ^= 1 })},
		{"IPv4 total length past the frame, to port 53", mod(dns.bytes(), func(b []byte) { binary.BigEndian.PutUint16(b[l3+2:], 1400); fixIPCsum(b, l3) })},
		{"UDP length past the IP payload, to port 53", mod(dns.bytes(), func(b []byte) { binary.BigEndian.PutUint16(b[l3+24:], 900) })},
		{"IPv4 IHL 4", mod(dns.bytes(), func(b []byte) { b[l3] = 0x44; fixIPCsum(b, l3) })},
		{"truncated IPv4 header", dns.bytes()[:l3+12]},
		{"IPv4 ethertype, no header", dns.bytes()[:14]},
		{"IPv4 ethertype, header but no UDP header", dns.bytes()[:l3+20+4]},
		{"later fragment (ports unknown)", packet{src: testSrc4, dst: testDst4, sport: 40000, dport: 4874, payload: validDatagram(), fragOff: 8}.bytes()},
		{"IPv6 later fragment", ipv6WithExt([][]byte{fragHdr(1, false)}, packet{src: testSrc6, dst: testDst6, sport: 40000, dport: 4874, payload: validDatagram()})},
		{"first fragment of UDP to port 53", packet{src: testSrc4, dst: testDst4, sport: 5353, dport: 53, payload: []byte("q"), moreFrags: true}.bytes()},
		{"ICMP echo", icmpEcho.bytes()},
		{"GRE", packet{src: testSrc4, dst: testDst4, rawProto: 47, payload: make([]byte, 24)}.bytes()},
		{"ICMPv6 neighbour solicitation", packet{src: testSrc6, dst: testDst6, rawProto: 58, payload: make([]byte, 24)}.bytes()},
		{"UDP from the bus port to elsewhere", packet{src: testSrc4, dst: testDst4, sport: 4874, dport: 40000, payload: validDatagram()}.bytes()},
		{"TCP from the proxy port (a reply)", tcpPacket(false, 4873, 40000, 0x12, "")},
		{"TCP to the bus port number", tcpPacket(false, 40000, 4874, 0x02, "")},
		{"UDP to the proxy port number", packet{src: testSrc4, dst: testDst4, sport: 40000, dport: 4873, payload: validDatagram()}.bytes()},
		{"VLAN-tagged DNS", packet{src: testSrc4, dst: testDst4, sport: 5353, dport: 53, payload: []byte("q"), vlans: 2}.bytes()},
		{"three VLAN tags (deeper than XDP looks) around a bus datagram", threeVLANs(busPacket(false, 0, validDatagram()))},
		{"ARP", append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06}, make([]byte, 28)...)},
		{"LLDP", append([]byte{0x01, 0x80, 0xc2, 0, 0, 0x0e, 2, 0, 0, 0, 0, 1, 0x88, 0xcc}, make([]byte, 40)...)},
		{"Ethernet header alone", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x88, 0xb5}},
	} {
		ret, got, out := runXDPOut(t, o, tc.pkt)
		if got != notJudged || ret != xdpPass {
			t.Errorf("%s: action %d reason %s, want a pass and no counter", tc.name, ret, verdictWord(got))
		}
		if !bytes.Equal(out, tc.pkt) {
			t.Errorf("%s: the frame was changed", tc.name)
		}
	}
}

func mod(b []byte, f func([]byte)) []byte {
	c := append([]byte(nil), b...)
	f(c)
	return c
}

func fixIPCsum(b []byte, l3 int) {
	ihl := int(b[l3]&0x0f) * 4
	if ihl < 20 {
		ihl = 20
	}
	b[l3+10], b[l3+11] = 0, 0
	binary.BigEndian.PutUint16(b[l3+10:], checksum(b[l3:l3+ihl], 0))
}

// threeVLANs inserts a third 802.1Q tag after the MAC addresses.
func threeVLANs(frame []byte) []byte {
	out := append([]byte(nil), frame[:12]...)
	out = append(out, 0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3)
	return append(out, frame[12:]...)
}

// verdictWord names a reason, or says that nothing judged the packet.
func verdictWord(r Reason) string {
	if r == notJudged {
		return "(not judged)"
	}
	return r.String()
}

// ipv6WithExt inserts extension headers between p's IPv6 header and its
// L4 segment.
func ipv6WithExt(exts [][]byte, p packet) []byte {
	b := p.bytes()
	const l3 = 14
	proto := byte(ipProtoUDP)
	if p.tcp {
		proto = ipProtoTCP
	}
	if p.rawProto != 0 {
		proto = p.rawProto
	}
	udp := append([]byte(nil), b[l3+40:]...)
	var ext []byte
	next := proto
	for i := len(exts) - 1; i >= 0; i-- {
		e := append([]byte(nil), exts[i]...)
		e[0] = next
		next = exts[i][0]
		ext = append(e, ext...)
	}
	out := append([]byte(nil), b[:l3+40]...)
	out[l3+6] = next
	binary.BigEndian.PutUint16(out[l3+4:], uint16(len(ext)+len(udp)))
	return append(append(out, ext...), udp...)
}

// hopByHop and destOpts are 8-byte option headers; byte 0 is the type of
// this header (ipv6WithExt moves it into the previous header's next field).
func hopByHop() []byte { return []byte{0, 0, 1, 4, 0, 0, 0, 0} }
func destOpts() []byte { return []byte{60, 0, 1, 4, 0, 0, 0, 0} }
func fragHdr(off uint16, more bool) []byte {
	v := off << 3
	if more {
		v |= 1
	}
	return []byte{44, 0, byte(v >> 8), byte(v), 0, 0, 0, 1}
}

func TestXDPIPv6ExtensionHeaders(t *testing.T) {
	o := loadForTest(t)
	dg := validDatagram()
	bad := append([]byte(nil), dg...)
	bad[len(bad)-1] ^= 1
	bus := func(payload []byte) packet {
		return packet{src: testSrc6, dst: testDst6, sport: 40000, dport: 4874, payload: payload}
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want Reason
	}{
		{"hop-by-hop, valid datagram", ipv6WithExt([][]byte{hopByHop()}, bus(dg)), ReasonOK},
		{"hop-by-hop + dest opts, bad checksum", ipv6WithExt([][]byte{hopByHop(), destOpts()}, bus(bad)), ReasonChecksum},
		{"four headers, judged", ipv6WithExt([][]byte{hopByHop(), destOpts(), destOpts(), destOpts()}, bus(bad)), ReasonChecksum},
		{"five headers: deeper than XDP looks, the stack decides", ipv6WithExt([][]byte{hopByHop(), destOpts(), destOpts(), destOpts(), destOpts()}, bus(bad)), notJudged},
		{"first fragment to the bus", ipv6WithExt([][]byte{fragHdr(0, true)}, bus(dg)), ReasonFragment},
		{"UDP length 0 (RFC 2675): the IP payload length", mod(busPacket(true, 0, dg), func(b []byte) { b[14+40+4], b[14+40+5] = 0, 0 }), ReasonOK},
	} {
		ret, got := runXDP(t, o, tc.pkt)
		if got != tc.want || ret != wantAction(tc.want) {
			t.Errorf("%s: action %d reason %s, want %s", tc.name, ret, verdictWord(got), verdictWord(tc.want))
		}
	}
}

// TestXDPBusDatagramTrimmedLikeLinux: bytes inside the IP payload after the
// UDP length are not part of the datagram (Linux trims them): the datagram
// is judged on the UDP length alone.
func TestXDPBusDatagramTrimmedLikeLinux(t *testing.T) {
	o := loadForTest(t)
	for _, v6 := range []bool{false, true} {
		p := packet{src: testSrc4, dst: testDst4, sport: 40000, dport: 4874, payload: validDatagram(), ipTrailer: []byte{0xff, 0xff, 0xff}}
		if v6 {
			p.src, p.dst = testSrc6, testDst6
		}
		if ret, got := runXDP(t, o, p.bytes()); got != ReasonOK || ret != xdpPass {
			t.Errorf("v6=%v: valid datagram with trailing bytes: action %d reason %s", v6, ret, verdictWord(got))
		}
		short := p
		short.payload = validDatagram()[:20]
		short.ipTrailer = validDatagram()[20:] // the rest of a valid datagram, outside the UDP length
		if ret, got := runXDP(t, o, short.bytes()); got != ReasonLength || ret != xdpDrop {
			t.Errorf("v6=%v: datagram cut short by the UDP length: action %d reason %s, want length", v6, ret, verdictWord(got))
		}
	}
}

// xdpAction runs pkt through XDP and returns the action alone (traffic
// XDP does not judge may move no counter).
func xdpAction(t *testing.T, o *Objects, pkt []byte) uint32 {
	t.Helper()
	ret, err := o.XDP().Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		t.Fatalf("Program.Run: %v", err)
	}
	return ret
}

// TestXDPBlockList: a blocked source loses the proxy ports, and only them:
// its bus datagrams are judged as anyone's, its TCP to any other port
// (ssh, the admin listener, the node's other services) passes.
func TestXDPBlockList(t *testing.T) {
	o := loadForTest(t)
	pkt := busPacket(false, 0, validDatagram())
	tcp := tcpPacket(false, 1234, 4873, 0x02, "")
	tcp6 := tcpPacket(true, 1234, 4873, 0x10, "GET / HTTP/1.1\r\n\r\n")
	pkt6 := busPacket(true, 1, validDatagram())
	if _, r := runXDP(t, o, pkt); r != ReasonOK {
		t.Fatalf("before blocking: %s", r)
	}
	if err := o.Block(netip.MustParsePrefix("192.0.2.0/28"), 0); err != nil {
		t.Fatal(err)
	}
	if err := o.Block(netip.MustParsePrefix("2001:db8::10/128"), time.Hour); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string][]byte{"tcp syn": tcp, "tcp ipv6 data": tcp6} {
		if ret, r := runXDP(t, o, p); r != ReasonBlocked || ret != xdpDrop {
			t.Errorf("%s to the proxy port from a blocked source: %d %s", name, ret, r)
		}
	}
	for name, p := range map[string][]byte{"udp bus": pkt, "udp bus ipv6": pkt6} {
		if ret, r := runXDP(t, o, p); r != ReasonOK || ret != xdpPass {
			t.Errorf("%s from a blocked source: %d %s, want judged as anyone's", name, ret, r)
		}
	}
	for _, port := range []uint16{22, 9873, 4874, 443, 4872, 4875} {
		for _, v6 := range []bool{false, true} {
			if ret := xdpAction(t, o, tcpPacket(v6, 1234, port, 0x02, "")); ret != xdpPass {
				t.Errorf("TCP to port %d (ipv6 %v) from a blocked source: action %d, want pass", port, v6, ret)
			}
		}
	}
	list, err := o.Blocked()
	if err != nil || len(list) != 2 {
		t.Fatalf("Blocked = %v, %v", list, err)
	}
	for _, e := range list {
		switch e.Prefix.String() {
		case "192.0.2.0/28":
			if !e.Expires.IsZero() {
				t.Errorf("%v expires %v, want never", e.Prefix, e.Expires)
			}
		case "2001:db8::10/128":
			if d := time.Until(e.Expires); d < 59*time.Minute || d > time.Hour {
				t.Errorf("%v expires in %v, want about an hour", e.Prefix, d)
			}
		default:
			t.Errorf("unexpected entry %v", e)
		}
	}
	// An entry whose time has passed no longer blocks, and listing drops it.
	if err := o.Block(netip.MustParsePrefix("192.0.2.0/28"), time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "the 1ns block to expire", func() bool { _, r := runXDP(t, o, tcp); return r == ReasonOK })
	if list, _ := o.Blocked(); len(list) != 1 {
		t.Fatalf("after expiry Blocked = %v", list)
	}
	if err := o.Unblock(netip.MustParsePrefix("2001:db8::10/128")); err != nil {
		t.Fatal(err)
	}
	if _, r := runXDP(t, o, tcp6); r != ReasonOK {
		t.Fatalf("after unblock: %s", r)
	}
}

func TestXDPSynGuard(t *testing.T) {
	testutil.RequireRoot(t)
	opts := DefaultOptions()
	opts.SynRate, opts.SynBurst = 1, 5 // 1 per second after a burst of 5
	o, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if n := o.xdp.SynBuckets.MaxEntries(); n != 65536 {
		t.Errorf("syn_buckets has %d entries with the guard on, want the default 65536", n)
	}
	syn := tcpPacket(false, 1000, 4873, 0x02, "")
	var drops int
	for i := 0; i < 20; i++ {
		if _, r := runXDP(t, o, syn); r == ReasonSynflood {
			drops++
		}
	}
	// 5 pass at once; in the few ms the loop takes, at most one more token.
	if drops < 14 || drops > 15 {
		t.Fatalf("%d of 20 SYNs dropped, want 14 or 15", drops)
	}
	for name, p := range map[string][]byte{
		"SYN-ACK": tcpPacket(false, 1000, 4873, 0x12, ""),
		"data":    tcpPacket(false, 1000, 4873, 0x18, "GET"),
	} {
		if _, r := runXDP(t, o, p); r != ReasonOK {
			t.Errorf("%s: %s, want ok", name, verdictWord(r))
		}
	}
	// Not to a proxy port: not the agent's to judge.
	if _, r := runXDP(t, o, tcpPacket(false, 1000, 8080, 0x02, "")); r != notJudged {
		t.Errorf("SYN to another port: %s, want not judged", verdictWord(r))
	}
	// Another source has its own bucket.
	other := packet{src: netip.MustParseAddr("192.0.2.99"), dst: testDst4, sport: 1, dport: 4873, tcp: true, tcpFlags: 0x02}
	if _, r := runXDP(t, o, other.bytes()); r != ReasonOK {
		t.Errorf("another source's first SYN: %s", r)
	}
}

// TestSynGuardOffByDefault: with the default options SYNs are never dropped,
// and the guard's buckets take no memory.
func TestSynGuardOffByDefault(t *testing.T) {
	o := loadForTest(t)
	if n := o.xdp.SynBuckets.MaxEntries(); n != 1 {
		t.Errorf("syn_buckets has %d entries with the guard off, want 1", n)
	}
	syn := tcpPacket(false, 1001, 4873, 0x02, "")
	for i := 0; i < 50; i++ {
		if _, r := runXDP(t, o, syn); r != ReasonOK {
			t.Fatalf("SYN %d: %s", i, r)
		}
	}
}

// TestAllowListShortAndLong: a short allow-list is checked from config_map,
// a long one through the tries; both give the same verdicts.
func TestAllowListShortAndLong(t *testing.T) {
	o := loadForTest(t)
	long := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")}
	for i := 0; i < 20; i++ { // past both short-list sizes
		long = append(long, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24))
		long = append(long, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb9, byte(i)}), 48))
	}
	for name, allow := range map[string][]netip.Prefix{
		"short": {netip.MustParsePrefix("192.0.2.0/28"), netip.MustParsePrefix("2001:db8::10/127")},
		"long":  long,
	} {
		t.Run(name, func(t *testing.T) {
			if err := o.SetAllow(allow); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				src  netip.Addr
				want Reason
			}{
				{testSrc4, ReasonOK},                                  // 192.0.2.10
				{netip.MustParseAddr("192.0.3.10"), ReasonSource},     // outside
				{testSrc6, ReasonOK},                                  // 2001:db8::10
				{netip.MustParseAddr("2001:db8:1::10"), ReasonSource}, // outside
			} {
				t.Run(tc.src.String(), func(t *testing.T) {
					dst := testDst4
					if tc.src.Is6() {
						dst = testDst6
					}
					p := packet{src: tc.src, dst: dst, sport: 1, dport: 4874, payload: validDatagram()}
					if _, r := runXDP(t, o, p.bytes()); r != tc.want {
						t.Errorf("%s list: from %v: %s, want %s", name, tc.src, r, tc.want)
					}
				})
			}
		})
	}
}

// TestRegistrySlotCollision: two registries whose hashes map to the same
// cache slot are both counted exactly (one in the slot, one in the map).
func TestRegistrySlotCollision(t *testing.T) {
	o := loadForTest(t)
	slot := func(h uint32) uint32 { return ((h ^ 2<<29) * 2654435761) >> 24 } // DIR_BUS
	a := uint32(0x1234)
	b := a + 1
	for slot(b) != slot(a) {
		b++
	}
	knowRegistries(t, o, a, b)
	for i, h := range []uint32{a, b, a, b, b} {
		s := codec.DefaultState()
		s.RegistryHash = h
		f := codec.Update(codec.FieldRows, uint64(10+i))
		if _, r := runXDP(t, o, busPacket(false, 0, codec.AppendDatagram(nil, s, &f))); r != ReasonOK {
			t.Fatalf("datagram %d: %s", i, r)
		}
	}
	cs, err := o.RegistryCounters()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]uint64{}
	for _, c := range cs {
		got[c.Hash] = c.Packets
	}
	if got[a] != 2 || got[b] != 3 {
		t.Fatalf("counters %+v: want 0x%x=2 and 0x%x=3", cs, a, b)
	}
}

// TestBusPassCountedWhenRegistryFull: a valid datagram whose registry finds
// no slot and no room in the full hash map is still counted as a pass (a
// flood of random registry hashes must not make passes vanish; found by
// the differential fuzzer at 2,000,000 inputs).
func TestBusPassCountedWhenRegistryFull(t *testing.T) {
	testutil.RequireRoot(t)
	opts := DefaultOptions()
	opts.RegistryEntries = 2
	o, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := o.SetAllow([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	slot := func(h uint32) uint32 { return ((h ^ 2<<29) * 2654435761) >> 24 } // DIR_BUS
	hashes := []uint32{0x5000}
	for h := hashes[0] + 1; len(hashes) < 5; h++ {
		if slot(h) == slot(hashes[0]) {
			hashes = append(hashes, h) // one slot, then two map entries, then none
		}
	}
	before, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hashes {
		s := codec.DefaultState()
		s.RegistryHash = h
		f := codec.Update(codec.FieldRows, uint64(10+i))
		if ret, _ := runXDP(t, o, busPacket(false, 0, codec.AppendDatagram(nil, s, &f))); ret != xdpPass {
			t.Fatalf("datagram %d: action %d", i, ret)
		}
	}
	after, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := after[ReasonOK] - before[ReasonOK]; got != uint64(len(hashes)) {
		t.Errorf("%d passes counted for %d valid datagrams", got, len(hashes))
	}
}

// TestMadeUpBusHashesAreNotCounted: bus sources are addresses, and UDP
// lets anyone forge one; valid datagrams with 300 made-up registry hashes
// from an allowed source must neither add entries to the pinned registry
// counters (4096, never emptied: filled, a configured registry counted
// later would not be counted at all) nor take the per-CPU slots. They pass
// and are counted as passes; the configured registry's are counted under
// it.
func TestMadeUpBusHashesAreNotCounted(t *testing.T) {
	o := loadForTest(t)
	const known = 0xa1b2c3d4
	knowRegistries(t, o, known)
	before, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	send := func(h uint32) {
		t.Helper()
		s := codec.DefaultState()
		s.RegistryHash = h
		f := codec.Update(codec.FieldRows, 40)
		if ret, r := runXDP(t, o, busPacket(false, 0, codec.AppendDatagram(nil, s, &f))); r != ReasonOK || ret != xdpPass {
			t.Fatalf("datagram of 0x%08x: %d %s", h, ret, verdictWord(r))
		}
	}
	for range 300 {
		h := rng.Uint32()
		if h == known {
			h++
		}
		send(h)
	}
	send(known)
	send(known)
	var keys int
	iter := o.xdp.RegistryStats.Iterate()
	var k xdpRegistryKey
	var v []xdpRegistryCounters
	for iter.Next(&k, &v) {
		keys++
		if k.Hash != known {
			t.Errorf("registry_stats has an entry for made-up 0x%08x", k.Hash)
		}
	}
	if err := iter.Err(); err != nil || keys != 1 {
		t.Fatalf("registry_stats: %d keys (%v), want the configured one", keys, err)
	}
	slots, err := readSlots(o.xdp.RegistrySlots)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.Packets != 0 && s.Hash != known {
			t.Errorf("a slot counts made-up 0x%08x", s.Hash)
		}
	}
	after, err := o.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := after[ReasonOK] - before[ReasonOK]; got != 302 {
		t.Errorf("%d passes counted for 302 valid datagrams", got)
	}
	cs, err := o.RegistryCounters()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Hash != known || cs[0].Packets != 2 {
		t.Errorf("registry counters %+v, want 0x%08x with 2 packets", cs, uint32(known))
	}
}

// TestXDPSeveralProxyPorts: every configured proxy port is the agent's (the
// block list applies to TCP to each, from the fast section and the general
// parser alike), including those after a 0 in the list; other ports pass.
func TestXDPSeveralProxyPorts(t *testing.T) {
	testutil.RequireRoot(t)
	opts := DefaultOptions()
	opts.ProxyPorts = []uint16{0, 4873, 8443}
	o, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	if err := o.Block(netip.MustParsePrefix("192.0.2.0/28"), 0); err != nil {
		t.Fatal(err)
	}
	if err := o.Block(netip.MustParsePrefix("2001:db8::10/128"), 0); err != nil {
		t.Fatal(err)
	}
	for _, v6 := range []bool{false, true} {
		for _, port := range []uint16{4873, 8443} {
			if ret, r := runXDP(t, o, tcpPacket(v6, 1234, port, 0x02, "")); r != ReasonBlocked || ret != xdpDrop {
				t.Errorf("TCP to proxy port %d (ipv6 %v) from a blocked source: %d %s", port, v6, ret, r)
			}
		}
		for _, port := range []uint16{443, 8444, 4874} {
			if ret, r := runXDP(t, o, tcpPacket(v6, 1234, port, 0x02, "")); r != notJudged || ret != xdpPass {
				t.Errorf("TCP to port %d (ipv6 %v): %d %s, want passed unjudged", port, v6, ret, r)
			}
		}
	}
}
