package loader

import (
	"encoding/binary"
	"net/netip"
)

// Test packets: Ethernet, optional VLAN tags, IPv4 or IPv6, UDP or TCP, built
// by hand so the tests depend on nothing but the RFCs.

type packet struct {
	src, dst     netip.Addr
	sport, dport uint16
	vlans        int // 0, 1 (802.1Q) or 2 (802.1ad outer, 802.1Q inner)
	tcp          bool
	tcpFlags     byte
	payload      []byte
	fragOff      uint16 // IPv4 fragment offset in 8-byte units
	moreFrags    bool
	ipOpts       []byte // IPv4 options (a multiple of 4 bytes)
	// ipTrailer follows the L4 segment inside the IP payload: bytes the UDP
	// length does not cover (Linux trims them).
	ipTrailer []byte
	rawProto  byte // non-zero: this IP protocol, payload as the whole L4 segment
}

const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	ipProtoTCP    = 6
	ipProtoUDP    = 17
)

func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func (p packet) l4() []byte {
	if p.rawProto != 0 {
		return append([]byte(nil), p.payload...)
	}
	var h []byte
	if p.tcp {
		h = make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		h[12] = 5 << 4
		h[13] = p.tcpFlags
		binary.BigEndian.PutUint16(h[14:], 65535)
	} else {
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(p.payload)))
	}
	seg := append(h, p.payload...)
	// Pseudo-header checksum.
	var pseudo []byte
	proto := byte(ipProtoUDP)
	if p.tcp {
		proto = ipProtoTCP
	}
	if p.src.Is4() {
		s, d := p.src.As4(), p.dst.As4()
		pseudo = append(append(append(pseudo, s[:]...), d[:]...), 0, proto, byte(len(seg)>>8), byte(len(seg)))
	} else {
		s, d := p.src.As16(), p.dst.As16()
		pseudo = append(append(pseudo, s[:]...), d[:]...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, proto)
	}
	csumOff := 6
	if p.tcp {
		csumOff = 16
	}
	c := checksum(append(pseudo, seg...), 0)
	if c == 0 && !p.tcp {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[csumOff:], c)
	return seg
}

func (p packet) bytes() []byte {
	b := []byte{0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01}
	switch p.vlans {
	case 1:
		b = append(b, 0x81, 0x00, 0x00, 0x0a)
	case 2:
		b = append(b, 0x88, 0xa8, 0x00, 0x0b, 0x81, 0x00, 0x00, 0x0a)
	}
	seg := append(p.l4(), p.ipTrailer...)
	proto := byte(ipProtoUDP)
	if p.tcp {
		proto = ipProtoTCP
	}
	if p.rawProto != 0 {
		proto = p.rawProto
	}
	if p.src.Is4() {
		b = binary.BigEndian.AppendUint16(b, etherTypeIPv4)
		ip := make([]byte, 20+len(p.ipOpts))
		copy(ip[20:], p.ipOpts)
		ip[0] = 0x40 | byte(len(ip)/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(seg)))
		frag := p.fragOff & 0x1fff
		if p.moreFrags {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[8] = 64
		ip[9] = proto
		s, d := p.src.As4(), p.dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
		return append(append(b, ip...), seg...)
	}
	b = binary.BigEndian.AppendUint16(b, etherTypeIPv6)
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(seg)))
	ip[6] = proto
	ip[7] = 64
	s, d := p.src.As16(), p.dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(append(b, ip...), seg...)
}

// The destinations are loopback addresses: BPF_PROG_TEST_RUN runs XDP as
// if on lo, and XDP drops only packets the stack would deliver to this host
// (addressed_here in bpf/xdp.c). A documentation address would be judged
// on a machine with forwarding off and passed untouched (forwarded) on one
// with forwarding on and a default route.
var (
	testSrc4 = netip.MustParseAddr("192.0.2.10")
	testDst4 = netip.MustParseAddr("127.0.0.1")
	testSrc6 = netip.MustParseAddr("2001:db8::10")
	testDst6 = netip.IPv6Loopback()
)

// busPacket wraps a datagram payload to the bus port.
func busPacket(v6 bool, vlans int, payload []byte) []byte {
	p := packet{src: testSrc4, dst: testDst4, sport: 40000, dport: 4874, vlans: vlans, payload: payload}
	if v6 {
		p.src, p.dst = testSrc6, testDst6
	}
	return p.bytes()
}
