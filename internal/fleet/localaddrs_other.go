//go:build !linux

package fleet

import (
	"fmt"
	"net"
	"net/netip"
)

// LocalAddrs lists this host's addresses (off Linux: the interfaces'
// addresses, without namespaces).
type LocalAddrs struct{}

// NewLocalAddrs returns a lister.
func NewLocalAddrs() (*LocalAddrs, error) { return &LocalAddrs{}, nil }

// List returns the addresses.
func (l *LocalAddrs) List() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("fleet: list local addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// Close does nothing.
func (l *LocalAddrs) Close() {}
