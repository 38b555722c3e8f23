package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// lpmKey4 and lpmKey6 are the LPM trie keys of bpf/include/maps.h.
func lpmKey4(p netip.Prefix) xdpLpmV4 {
	a := p.Addr().As4()
	// The kernel compares the address bytes in network order; the struct
	// field is a u32 in host (little-endian) layout, so store the bytes as-is.
	return xdpLpmV4{Prefixlen: uint32(p.Bits()), Addr: binary.LittleEndian.Uint32(a[:])}
}

func lpmKey6(p netip.Prefix) xdpLpmV6 {
	return xdpLpmV6{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

func prefixOf4(k xdpLpmV4) netip.Prefix {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], k.Addr)
	return netip.PrefixFrom(netip.AddrFrom4(a), int(k.Prefixlen))
}

func prefixOf6(k xdpLpmV6) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen))
}

// canonical returns p masked, with IPv4-mapped IPv6 turned into IPv4.
func canonical(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("loader: invalid prefix %v", p)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// replaceLPM makes the v4 and v6 tries hold exactly prefixes: new entries
// are added first, then stale ones removed, so a prefix present before and
// after is never missing in between.
func replaceLPM(m4, m6 *ebpf.Map, prefixes []netip.Prefix, value func() any) error {
	want4 := map[xdpLpmV4]bool{}
	want6 := map[xdpLpmV6]bool{}
	for _, p := range prefixes {
		p, err := canonical(p)
		if err != nil {
			return err
		}
		if p.Addr().Is4() {
			want4[lpmKey4(p)] = true
		} else {
			want6[lpmKey6(p)] = true
		}
	}
	for k := range want4 {
		if err := m4.Put(k, value()); err != nil {
			return fmt.Errorf("loader: %s: put %v: %w", m4, prefixOf4(k), err)
		}
	}
	for k := range want6 {
		if err := m6.Put(k, value()); err != nil {
			return fmt.Errorf("loader: %s: put %v: %w", m6, prefixOf6(k), err)
		}
	}
	keys4, err4 := mapKeys[xdpLpmV4](m4)
	keys6, err6 := mapKeys[xdpLpmV6](m6)
	if err := errors.Join(err4, err6); err != nil {
		return fmt.Errorf("loader: list LPM trie: %w", err)
	}
	var stale4 []xdpLpmV4
	for _, k := range keys4 {
		if !want4[k] {
			stale4 = append(stale4, k)
		}
	}
	var stale6 []xdpLpmV6
	for _, k := range keys6 {
		if !want6[k] {
			stale6 = append(stale6, k)
		}
	}
	for _, k := range stale4 {
		if err := m4.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("loader: %s: delete %v: %w", m4, prefixOf4(k), err)
		}
	}
	for _, k := range stale6 {
		if err := m6.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("loader: %s: delete %v: %w", m6, prefixOf6(k), err)
		}
	}
	return nil
}

// mapKeys lists the keys of m (no values: LPM tries and hashes alike).
func mapKeys[K comparable](m *ebpf.Map) ([]K, error) {
	var keys []K
	var next K
	err := m.NextKey(nil, &next)
	for err == nil {
		keys = append(keys, next)
		cur := next
		err = m.NextKey(cur, &next)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return keys, nil
	}
	return keys, err
}

// nativeU32 reads 4 network-order bytes as the kernel stores them in a
// __u32 field of a struct (memory order), on a little-endian host.
func nativeU32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
