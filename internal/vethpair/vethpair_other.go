//go:build !linux

package vethpair

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netns"
)

// ErrNeedsLinux is what every call returns off Linux: network namespaces
// and veth pairs exist only there. Tests that need them skip before calling
// (testutil.RequireRoot), so this is only reached by a misuse.
var ErrNeedsLinux = errors.New("vethpair: network namespaces and veth pairs need Linux")

// The types below mirror vethpair.go's so that code using them compiles
// everywhere; CI's GOOS=darwin vet catches a field added on one side only.

// Hosts is a pair of namespaces joined by veth: A (client side) and B.
type Hosts struct {
	A, B         netns.NsHandle
	NameA, NameB string
	IfA, IfB     string
	A4, B4       netip.Addr
	A6, B6       netip.Addr
}

// Documentation-range addresses used inside the namespaces.
var (
	HostA4 = netip.MustParseAddr("192.0.2.1")
	HostB4 = netip.MustParseAddr("192.0.2.2")
	HostA6 = netip.MustParseAddr("2001:db8::1")
	HostB6 = netip.MustParseAddr("2001:db8::2")
)

// Create fails off Linux.
func Create() (*Hosts, error) { return nil, ErrNeedsLinux }

// Close has nothing to remove off Linux.
func (h *Hosts) Close() error { return nil }

// In fails off Linux without running fn.
func In(netns.NsHandle, func()) error { return ErrNeedsLinux }

// Star is a hub namespace joined to N spoke namespaces.
type Star struct {
	Hub     netns.NsHandle
	HubName string
	Spokes  []Spoke
}

// Spoke is one spoke namespace.
type Spoke struct {
	NS      netns.NsHandle
	Name    string
	If      string
	HubIf   string
	Addr    netip.Addr
	HubAddr netip.Addr
}

// CreateStar fails off Linux.
func CreateStar(int) (*Star, error) { return nil, ErrNeedsLinux }

// AddHubAddr fails off Linux.
func (st *Star) AddHubAddr(int, netip.Prefix) error { return ErrNeedsLinux }

// Close has nothing to remove off Linux.
func (st *Star) Close() error { return nil }
