package loader

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// localV4, localV6 and localIncomplete are LOCAL_V4, LOCAL_V6 and
// LOCAL_INCOMPLETE of bpf/include/protocol.h.
const (
	localV4         = 8
	localV6         = 4
	localIncomplete = 1
)

// LocalList is the kernel's list of the node's own unicast addresses: XDP
// takes a drop to one of them for its own without asking the FIB
// (docs/kernel.md, "The local address list").
type LocalList struct {
	Addrs []netip.Addr // IPv4 first, each family in the order given
	// Incomplete: the node has more addresses than the list holds; the
	// FIB decides for the rest.
	Incomplete bool
}

// SetLocalAddrs writes addrs, the node's own unicast addresses most wanted
// first, into config_map's local list: the first LOCAL_V4 IPv4 and LOCAL_V6
// IPv6 addresses, and whether more were left out. Unspecified and multicast
// addresses and repeats are skipped (an address on two interfaces is one).
// Only the local list's fields change, and config_map is written only when
// they do.
func (o *Objects) SetLocalAddrs(addrs []netip.Addr) error {
	var want xdpRegedgeCfg
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || seen[a] {
			continue
		}
		seen[a] = true
		switch {
		case a.Is4() && want.Local4N < localV4:
			b := a.As4()
			want.Local4[want.Local4N] = nativeU32(b[:])
			want.Local4N++
		case a.Is6() && want.Local6N < localV6:
			b := a.As16()
			want.Local6[want.Local6N].Addr = [2]uint64{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}
			want.Local6N++
		default:
			want.LocalFlags |= localIncomplete
		}
	}
	return o.updateConfigIf(func(c *xdpRegedgeCfg) bool {
		if c.Local4N == want.Local4N && c.Local6N == want.Local6N && c.LocalFlags == want.LocalFlags &&
			c.Local4 == want.Local4 && c.Local6 == want.Local6 {
			return false
		}
		c.Local4N, c.Local6N, c.LocalFlags = want.Local4N, want.Local6N, want.LocalFlags
		c.Local4, c.Local6 = want.Local4, want.Local6
		return true
	})
}

// LocalAddrs reads the local list back from config_map.
func (o *Objects) LocalAddrs() (LocalList, error) { return readLocalList(o.xdp.ConfigMap) }

// readLocalList reads the local list of a config_map (the agent's, or a
// pinned one for bpf status).
func readLocalList(m *ebpf.Map) (LocalList, error) {
	var c xdpRegedgeCfg
	if err := m.Lookup(uint32(0), &c); err != nil {
		return LocalList{}, fmt.Errorf("loader: read config_map: %w", err)
	}
	if c.Local4N > localV4 || c.Local6N > localV6 {
		return LocalList{}, fmt.Errorf("loader: config_map's local list counts %d IPv4 and %d IPv6 addresses, more than it holds", c.Local4N, c.Local6N)
	}
	l := LocalList{Incomplete: c.LocalFlags&localIncomplete != 0}
	for _, w := range c.Local4[:c.Local4N] {
		l.Addrs = append(l.Addrs, netip.AddrFrom4([4]byte{byte(w), byte(w >> 8), byte(w >> 16), byte(w >> 24)}))
	}
	for _, e := range c.Local6[:c.Local6N] {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:8], e.Addr[0])
		binary.LittleEndian.PutUint64(b[8:], e.Addr[1])
		l.Addrs = append(l.Addrs, netip.AddrFrom16(b))
	}
	return l, nil
}

// nodeAddr is one address of the node as netlink lists it.
type nodeAddr struct {
	addr     netip.Addr
	attached bool // on an interface the programs are attached to
	scope    int  // RT_SCOPE_*: 0 universe (global), 200 site, 253 link, 254 host
}

// orderLocal puts the addresses most worth the list's few slots first: those
// of the attached interfaces (where the packets XDP judges arrive), then by
// scope, global first, loopback last; ties by address, so the same node
// state always gives the same list.
func orderLocal(addrs []nodeAddr) []netip.Addr {
	s := slices.Clone(addrs)
	slices.SortStableFunc(s, func(a, b nodeAddr) int {
		if a.attached != b.attached {
			if a.attached {
				return -1
			}
			return 1
		}
		if a.scope != b.scope {
			return a.scope - b.scope
		}
		return a.addr.Compare(b.addr)
	})
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = a.addr
	}
	return out
}
