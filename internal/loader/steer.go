package loader

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Service names a socket the agent registers for sk_lookup: each has a slot
// per address family in the pinned SOCKMAP (bpf/sklookup.c).
type Service uint8

const (
	ServiceProxy     Service = 0 // TCP: the registry proxy
	ServiceBus       Service = 1 // UDP: the config bus
	ServiceWebSocket Service = 2 // TCP: the WebSocket config server
	numServices              = 3
)

func (s Service) String() string {
	switch s {
	case ServiceProxy:
		return "proxy"
	case ServiceBus:
		return "bus"
	case ServiceWebSocket:
		return "websocket"
	}
	return fmt.Sprintf("service %d", uint8(s))
}

// Destination is what the sk_lookup program steers to a service's
// registered socket: connections (TCP) or datagrams (UDP) to any address in
// Prefix on Port.
type Destination struct {
	Prefix  netip.Prefix
	Port    uint16
	UDP     bool // else TCP
	Service Service
}

func (d Destination) String() string {
	proto := "tcp"
	if d.UDP {
		proto = "udp"
	}
	return fmt.Sprintf("%s %s port %d (%s)", proto, d.Prefix, d.Port, d.Service)
}

func destKey(d Destination) (any, bool, error) {
	p, err := canonical(d.Prefix)
	if err != nil {
		return nil, false, err
	}
	if d.Port == 0 {
		return nil, false, errors.New("loader: steering needs a port")
	}
	if d.Service >= numServices {
		return nil, false, fmt.Errorf("loader: no service %d", d.Service)
	}
	proto := uint8(unix.IPPROTO_TCP)
	if d.UDP {
		proto = unix.IPPROTO_UDP
	}
	port := bits.ReverseBytes16(d.Port) // network order in memory
	if p.Addr().Is4() {
		return &sklookupDestV4{Prefixlen: 24 + uint32(p.Bits()), Proto: proto, Port: port, Addr: p.Addr().As4()}, true, nil
	}
	return &sklookupDestV6{Prefixlen: 24 + uint32(p.Bits()), Proto: proto, Port: port, Addr: p.Addr().As16()}, false, nil
}

// ListenConfig returns the net.ListenConfig for a listener sk_lookup steers
// to: plain TCP. Go listens with MPTCP by default since 1.24, and an MPTCP
// socket cannot go into the SOCKMAP.
func ListenConfig() net.ListenConfig {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc
}

// SkLookup returns the sk_lookup program.
func (o *Objects) SkLookup() *ebpf.Program { return o.sk.RegedgeSkLookup }

// steerEntry is the steering map for d's family and d's key in it.
func (o *Objects) steerEntry(d Destination) (*ebpf.Map, any, error) {
	k, v4, err := destKey(d)
	if err != nil {
		return nil, nil, err
	}
	if v4 {
		return o.sk.SteerV4, k, nil
	}
	return o.sk.SteerV6, k, nil
}

// Steer sends new connections (or datagrams) to d to its service's
// registered socket.
func (o *Objects) Steer(d Destination) error {
	m, k, err := o.steerEntry(d)
	if err != nil {
		return err
	}
	if err := m.Put(k, uint8(d.Service)); err != nil {
		return fmt.Errorf("loader: steer %s: %w", d, err)
	}
	return nil
}

// Unsteer stops steering d.
func (o *Objects) Unsteer(d Destination) error {
	m, k, err := o.steerEntry(d)
	if err != nil {
		return err
	}
	if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("loader: unsteer %s: %w", d, err)
	}
	return nil
}

// SteerCounters returns how many connections sk_lookup steered and how many
// it could not because no socket was registered for their service.
func (o *Objects) SteerCounters() (steered, noSocket uint64, err error) {
	var perCPU []uint64
	for i, dst := range []*uint64{&steered, &noSocket} {
		if err := o.sk.SteerStats.Lookup(uint32(i), &perCPU); err != nil {
			return 0, 0, fmt.Errorf("loader: read steer_stats: %w", err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return steered, noSocket, nil
}

// SteerFor lists the destinations that give a service everything a socket
// bound to host:port would receive: a wildcard host (empty, 0.0.0.0, ::)
// steers every address of its families, so steering changes which socket
// takes a connection, never who can connect.
func SteerFor(s Service, host string, port uint16, udp bool) ([]Destination, error) {
	var prefixes []netip.Prefix
	switch host {
	case "", "::", "[::]":
		prefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	case "0.0.0.0":
		prefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	default:
		a, err := netip.ParseAddr(host)
		if err != nil {
			return nil, fmt.Errorf("loader: steer %s: %q is not an address", s, host)
		}
		a = a.Unmap()
		prefixes = []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
	}
	out := make([]Destination, 0, len(prefixes))
	for _, p := range prefixes {
		out = append(out, Destination{Prefix: p, Port: port, UDP: udp, Service: s})
	}
	return out, nil
}

// SetSteering makes the steering tries hold exactly ds: new entries first,
// then stale ones (an earlier agent's ports) removed, so a destination in
// both sets is never missing in between.
func (o *Objects) SetSteering(ds []Destination) error {
	want := map[any]bool{}
	for _, d := range ds {
		m, k, err := o.steerEntry(d)
		if err != nil {
			return err
		}
		if err := m.Put(k, uint8(d.Service)); err != nil {
			return fmt.Errorf("loader: steer %s: %w", d, err)
		}
		switch k := k.(type) {
		case *sklookupDestV4:
			want[*k] = true
		case *sklookupDestV6:
			want[*k] = true
		}
	}
	k4, err := mapKeys[sklookupDestV4](o.sk.SteerV4)
	if err != nil {
		return fmt.Errorf("loader: list steer_v4: %w", err)
	}
	k6, err := mapKeys[sklookupDestV6](o.sk.SteerV6)
	if err != nil {
		return fmt.Errorf("loader: list steer_v6: %w", err)
	}
	for _, k := range k4 {
		if !want[k] {
			if err := o.sk.SteerV4.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("loader: unsteer: %w", err)
			}
		}
	}
	for _, k := range k6 {
		if !want[k] {
			if err := o.sk.SteerV6.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("loader: unsteer: %w", err)
			}
		}
	}
	return nil
}
