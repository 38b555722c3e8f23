// Package vethpair makes two network namespaces joined by a veth pair, for
// tests and benchmarks that need real packets between real hosts without
// touching the machine's own network. Addresses are from the documentation
// ranges and exist only inside the two namespaces. It needs root, and
// Linux: elsewhere every call fails with ErrNeedsLinux (vethpair_other.go),
// and only these types are shared.
package vethpair

import (
	"net/netip"

	"github.com/vishvananda/netns"
)

// Hosts is a pair of namespaces joined by veth: A (client side) and B.
type Hosts struct {
	A, B         netns.NsHandle
	NameA, NameB string
	IfA, IfB     string // veth ends in A and B
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

// Star is a hub namespace joined to N spoke namespaces, each by its own
// veth pair on its own /30: spoke i is 192.0.2.(4i+2), the hub's end of its
// link 192.0.2.(4i+1). For fleet tests: a controller in the hub, agents in
// the spokes.
type Star struct {
	Hub     netns.NsHandle
	HubName string
	Spokes  []Spoke
}

// Spoke is one spoke namespace.
type Spoke struct {
	NS      netns.NsHandle
	Name    string
	If      string     // the veth end in the spoke
	HubIf   string     // the veth end in the hub
	Addr    netip.Addr // the spoke's address
	HubAddr netip.Addr // the hub's address on this link
}
