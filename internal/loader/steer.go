package loader

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Destination is a (prefix, port) the sk_lookup program steers to the
// proxy's socket: connections to any address in Prefix on TCP port Port.
type Destination struct {
	Prefix netip.Prefix
	Port   uint16
}

func (d Destination) String() string { return fmt.Sprintf("%s port %d", d.Prefix, d.Port) }

func destKey(d Destination) (any, bool, error) {
	p, err := canonical(d.Prefix)
	if err != nil {
		return nil, false, err
	}
	if d.Port == 0 {
		return nil, false, errors.New("loader: steering needs a port")
	}
	port := bits.ReverseBytes16(d.Port) // network order in memory
	if p.Addr().Is4() {
		return &sklookupDestV4{Prefixlen: 16 + uint32(p.Bits()), Port: port, Addr: p.Addr().As4()}, true, nil
	}
	return &sklookupDestV6{Prefixlen: 16 + uint32(p.Bits()), Port: port, Addr: p.Addr().As16()}, false, nil
}

// ListenConfig returns the net.ListenConfig for the proxy's listener: plain
// TCP. Go listens with MPTCP by default since 1.24, and an MPTCP socket
// cannot go into the SOCKMAP that sk_lookup steers to.
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

// Steer sends TCP connections to d to the registered proxy socket.
func (o *Objects) Steer(d Destination) error {
	m, k, err := o.steerEntry(d)
	if err != nil {
		return err
	}
	if err := m.Put(k, uint8(1)); err != nil {
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
// it could not because no proxy socket was registered.
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
