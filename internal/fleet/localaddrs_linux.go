//go:build linux

package fleet

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// LocalAddrs lists the addresses of every interface of one network
// namespace, through a netlink socket opened in the namespace the caller
// is in when it calls NewLocalAddrs: later calls list that namespace's
// addresses whatever thread they run on.
type LocalAddrs struct{ h *netlink.Handle }

// NewLocalAddrs opens the netlink socket in the caller's namespace.
func NewLocalAddrs() (*LocalAddrs, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("fleet: netlink: %w", err)
	}
	return &LocalAddrs{h: h}, nil
}

// List returns the addresses.
func (l *LocalAddrs) List() ([]netip.Addr, error) {
	as, err := l.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("fleet: list local addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// Close closes the netlink socket.
func (l *LocalAddrs) Close() { l.h.Close() }
