package loader

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
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

// RegisterProxySocket puts the proxy's listening TCP socket into the
// SOCKMAP; steered connections are assigned to it from then on. An IPv4
// socket serves IPv4 destinations; an IPv6 one serves IPv6 destinations and,
// when it is dual-stack and no IPv4 socket is registered, IPv4 ones too.
func (o *Objects) RegisterProxySocket(c syscall.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("loader: proxy socket: %w", err)
	}
	var putErr error
	if err := raw.Control(func(fd uintptr) {
		if proto, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && proto == unix.IPPROTO_MPTCP {
			putErr = errors.New("the listener is an MPTCP socket (Go's default for listeners since 1.24), which a SOCKMAP cannot hold: create it with loader.ListenConfig()")
			return
		}
		slot := uint32(0)
		if dom, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && dom == unix.AF_INET6 {
			slot = 1
		}
		putErr = o.sk.ProxySocket.Put(slot, uint64(fd))
	}); err != nil {
		return fmt.Errorf("loader: proxy socket: %w", err)
	}
	if putErr != nil {
		return fmt.Errorf("loader: put the proxy socket into the SOCKMAP: %w", putErr)
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
