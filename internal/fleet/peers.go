package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Peer is one entry of fleet.peers: an address ("10.0.0.7:4875",
// "[2001:db8::7]:4875") or a DNS name whose every A and AAAA record is a
// peer on Port ("dns:regedge-fleet.regedge.svc.cluster.local:4875").
type Peer struct {
	Addr netip.AddrPort // set for an address
	Name string         // set for a DNS name
	Port uint16         // with Name
}

func (p Peer) String() string {
	if p.Name != "" {
		return "dns:" + p.Name + ":" + strconv.Itoa(int(p.Port))
	}
	return p.Addr.String()
}

// ParsePeer parses one fleet.peers entry.
func ParsePeer(s string) (Peer, error) {
	if rest, ok := strings.CutPrefix(s, "dns:"); ok {
		i := strings.LastIndexByte(rest, ':')
		if i < 0 {
			return Peer{}, fmt.Errorf("%q: want dns:NAME:PORT", s)
		}
		name, port := rest[:i], rest[i+1:]
		if err := validDNSName(name); err != nil {
			return Peer{}, fmt.Errorf("%q: %v", s, err)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return Peer{}, fmt.Errorf("%q: port %q, want 1..65535", s, port)
		}
		return Peer{Name: strings.TrimSuffix(name, "."), Port: uint16(n)}, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return Peer{}, fmt.Errorf("%q: want IP:PORT ([IPv6]:PORT) or dns:NAME:PORT", s)
	}
	if ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() || ap.Addr().Zone() != "" {
		return Peer{}, fmt.Errorf("%q: want a unicast address and a port 1..65535", s)
	}
	return Peer{Addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// ParsePeers parses fleet.peers; the error names the entry.
func ParsePeers(specs []string) ([]Peer, error) {
	out := make([]Peer, 0, len(specs))
	for i, s := range specs {
		p, err := ParsePeer(s)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// validDNSName accepts what a resolver is asked for: dot-separated labels
// of letters, digits, '-' and '_' (1..63 bytes each), 253 bytes in all.
func validDNSName(name string) error {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return errors.New("want a DNS name of 1..253 bytes")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q: want 1..63 letters, digits, '-' or '_', not starting or ending with '-'", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("label %q: byte 0x%02x is not allowed in a DNS name", label, c)
			}
		}
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return errors.New("an IP address, not a name (write it without the dns prefix)")
	}
	return nil
}

// Resolver is what peers are looked up with (*net.Resolver).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Resolve turns peers into addresses: every A and AAAA record of each
// name. prev, when not nil, gives the addresses a name had last time,
// kept when its lookup fails now (a DNS blip does not silence the
// fleet). It returns the addresses (sorted, without duplicates), the
// addresses of each name (for the next call) and the lookups that failed.
func Resolve(ctx context.Context, r Resolver, peers []Peer, prev map[string][]netip.AddrPort) ([]netip.AddrPort, map[string][]netip.AddrPort, error) {
	var out []netip.AddrPort
	byName := map[string][]netip.AddrPort{}
	var errs []error
	for _, p := range peers {
		if p.Name == "" {
			out = append(out, p.Addr)
			continue
		}
		key := p.String()
		if _, done := byName[key]; done {
			continue
		}
		addrs, err := r.LookupNetIP(ctx, "ip", p.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("fleet: resolve %s: %w", key, err))
			byName[key] = prev[key]
			out = append(out, prev[key]...)
			continue
		}
		var aps []netip.AddrPort
		for _, a := range addrs {
			aps = append(aps, netip.AddrPortFrom(a.Unmap(), p.Port))
		}
		byName[key] = aps
		out = append(out, aps...)
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(out), byName, errors.Join(errs...)
}

// Self tells whether an address is this edge's own hint socket: its port
// is the socket's and its address the socket's own, or any local
// address when the socket is bound to the unspecified address.
type Self struct {
	Bound netip.AddrPort // the socket's address (unspecified IP: every local address)
	Local []netip.Addr   // the host's (network namespace's) addresses
}

// Is reports whether ap is this edge.
func (s Self) Is(ap netip.AddrPort) bool {
	if !s.Bound.IsValid() || ap.Port() != s.Bound.Port() {
		return false
	}
	a := ap.Addr().Unmap()
	if !s.Bound.Addr().IsUnspecified() {
		return a == s.Bound.Addr().Unmap()
	}
	return a.IsLoopback() || slices.Contains(s.Local, a)
}

// ListenNetwork is the network to bind a listen address with: the
// unspecified addresses bind one dual-stack socket (IPv4 and IPv6 peers);
// any other address binds that family alone.
func ListenNetwork(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "udp"
	case a.Unmap().Is4():
		return "udp4"
	}
	return "udp6"
}

// ParseListen parses fleet.listen: an IP literal and a port ("0.0.0.0:4875",
// "[::]:4875"; port 0 picks a free one).
func ParseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want IP:PORT such as 0.0.0.0:4875", s)
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q: want an IP address such as 0.0.0.0 or ::, not a name", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: port %q, want 0..65535", s, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(n)), nil
}
