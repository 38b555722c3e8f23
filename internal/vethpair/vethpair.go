//go:build linux

// Package vethpair makes two network namespaces joined by a veth pair, for
// tests and benchmarks that need real packets between real hosts without
// touching the machine's own network. Addresses are from the documentation
// ranges and exist only inside the two namespaces. It needs root.
package vethpair

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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

var seq atomic.Uint32

// Create makes the namespaces (named, so `ip netns` shows them) and the veth
// pair. Close removes them; on error nothing is left behind.
func Create() (_ *Hosts, err error) {
	n := seq.Add(1)
	h := &Hosts{
		NameA: fmt.Sprintf("regedge-%d-a-%d", os.Getpid(), n), NameB: fmt.Sprintf("regedge-%d-b-%d", os.Getpid(), n),
		IfA: fmt.Sprintf("rgA%d", n), IfB: fmt.Sprintf("rgB%d", n),
		A4: HostA4, B4: HostB4, A6: HostA6, B6: HostB6,
		A: netns.None(), B: netns.None(),
	}
	// h, not the named result: every error return sets that to nil.
	defer func() {
		if err != nil {
			err = errors.Join(err, h.Close())
		}
	}()
	orig, restore, err := lockedIn()
	if err != nil {
		return nil, err
	}
	defer restore()
	if h.A, err = netns.NewNamed(h.NameA); err != nil {
		return nil, fmt.Errorf("vethpair: create netns %s: %w", h.NameA, err)
	}
	if h.B, err = netns.NewNamed(h.NameB); err != nil {
		return nil, fmt.Errorf("vethpair: create netns %s: %w", h.NameB, err)
	}
	if err := netns.Set(orig); err != nil {
		return nil, err
	}
	ha, err := netlink.NewHandleAt(h.A)
	if err != nil {
		return nil, err
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(h.B)
	if err != nil {
		return nil, err
	}
	defer hb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: h.IfA}, PeerName: h.IfB, PeerNamespace: netlink.NsFd(int(h.B))}
	if err := ha.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("vethpair: add veth %s/%s: %w", h.IfA, h.IfB, err)
	}
	if err := setup(ha, h.IfA, h.A4, h.A6); err != nil {
		return nil, err
	}
	if err := setup(hb, h.IfB, h.B4, h.B6); err != nil {
		return nil, err
	}
	return h, nil
}

// lockedIn locks the calling goroutine to its OS thread, because creating a
// namespace moves the thread into it, and returns the thread's original
// namespace and restore, which moves the thread back and unlocks it. If
// moving back fails the thread stays locked, and dies with its goroutine
// rather than serve others in the wrong namespace.
func lockedIn() (orig netns.NsHandle, restore func(), err error) {
	runtime.LockOSThread()
	orig, err = netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), nil, err
	}
	return orig, func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		orig.Close()
	}, nil
}

// Recreate deletes the veth pair and creates it again under the same names
// and addresses (new interface indexes): what an interface that is deleted
// and re-created looks like to programs attached to the old one.
func (h *Hosts) Recreate() error {
	ha, err := netlink.NewHandleAt(h.A)
	if err != nil {
		return err
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(h.B)
	if err != nil {
		return err
	}
	defer hb.Close()
	l, err := ha.LinkByName(h.IfA)
	if err != nil {
		return fmt.Errorf("vethpair: %s: %w", h.IfA, err)
	}
	if err := ha.LinkDel(l); err != nil { // takes the peer with it
		return fmt.Errorf("vethpair: delete %s: %w", h.IfA, err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: h.IfA}, PeerName: h.IfB, PeerNamespace: netlink.NsFd(int(h.B))}
	if err := ha.LinkAdd(veth); err != nil {
		return fmt.Errorf("vethpair: add veth %s/%s: %w", h.IfA, h.IfB, err)
	}
	return errors.Join(setup(ha, h.IfA, h.A4, h.A6), setup(hb, h.IfB, h.B4, h.B6))
}

func setup(hd *netlink.Handle, ifname string, a4, a6 netip.Addr) error {
	l, err := hd.LinkByName(ifname)
	if err != nil {
		return err
	}
	for _, a := range []struct {
		addr netip.Addr
		bits int
	}{{a4, 24}, {a6, 64}} {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.addr.AsSlice(), Mask: net.CIDRMask(a.bits, a.addr.BitLen())}}
		if a.addr.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := hd.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("vethpair: add %v to %s: %w", a.addr, ifname, err)
		}
	}
	if err := hd.LinkSetUp(l); err != nil {
		return err
	}
	if lo, err := hd.LinkByName("lo"); err == nil {
		_ = hd.LinkSetUp(lo)
	}
	return nil
}

// Close deletes both namespaces (and with them the veth pair).
func (h *Hosts) Close() error {
	var errs []error
	for _, ns := range []struct {
		handle netns.NsHandle
		name   string
	}{{h.A, h.NameA}, {h.B, h.NameB}} {
		if ns.handle.IsOpen() {
			ns.handle.Close()
			errs = append(errs, netns.DeleteNamed(ns.name))
		}
	}
	return errors.Join(errs...)
}

// In runs fn inside ns on the calling goroutine, its OS thread locked for
// the duration. Sockets fn opens stay in ns and may be used from any
// goroutine afterwards; goroutines fn starts do not inherit ns. If switching
// back fails the thread stays locked and dies with its goroutine.
func In(ns netns.NsHandle, fn func()) error {
	_, restore, err := lockedIn()
	if err != nil {
		return err
	}
	defer restore()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("vethpair: setns: %w", err)
	}
	fn()
	return nil
}

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

// CreateStar makes the hub and n spokes (n <= 60). Close removes them.
func CreateStar(n int) (_ *Star, err error) {
	if n < 1 || n > 60 {
		return nil, fmt.Errorf("vethpair: %d spokes, want 1..60", n)
	}
	id := seq.Add(1)
	st := &Star{HubName: fmt.Sprintf("regedge-%d-hub-%d", os.Getpid(), id), Hub: netns.None()}
	defer func() {
		if err != nil {
			err = errors.Join(err, st.Close())
		}
	}()
	orig, restore, err := lockedIn()
	if err != nil {
		return nil, err
	}
	defer restore()
	if st.Hub, err = netns.NewNamed(st.HubName); err != nil {
		return nil, fmt.Errorf("vethpair: create netns %s: %w", st.HubName, err)
	}
	for i := 0; i < n; i++ {
		sp := Spoke{
			Name: fmt.Sprintf("regedge-%d-s%d-%d", os.Getpid(), i, id), NS: netns.None(),
			If: fmt.Sprintf("rgS%d_%d", id, i), HubIf: fmt.Sprintf("rgH%d_%d", id, i),
			Addr:    netip.AddrFrom4([4]byte{192, 0, 2, byte(4*i + 2)}),
			HubAddr: netip.AddrFrom4([4]byte{192, 0, 2, byte(4*i + 1)}),
		}
		if sp.NS, err = netns.NewNamed(sp.Name); err != nil {
			return nil, fmt.Errorf("vethpair: create netns %s: %w", sp.Name, err)
		}
		st.Spokes = append(st.Spokes, sp)
	}
	if err := netns.Set(orig); err != nil {
		return nil, err
	}
	hh, err := netlink.NewHandleAt(st.Hub)
	if err != nil {
		return nil, err
	}
	defer hh.Close()
	for _, sp := range st.Spokes {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: sp.HubIf}, PeerName: sp.If, PeerNamespace: netlink.NsFd(int(sp.NS))}
		if err := hh.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("vethpair: add veth %s/%s: %w", sp.HubIf, sp.If, err)
		}
		sh, err := netlink.NewHandleAt(sp.NS)
		if err != nil {
			return nil, err
		}
		err = errors.Join(setup4(hh, sp.HubIf, sp.HubAddr), setup4(sh, sp.If, sp.Addr))
		sh.Close()
		if err != nil {
			return nil, err
		}
	}
	return st, nil
}

func setup4(hd *netlink.Handle, ifname string, a netip.Addr) error {
	l, err := hd.LinkByName(ifname)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(30, 32)}}
	if err := hd.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("vethpair: add %v to %s: %w", a, ifname, err)
	}
	if err := hd.LinkSetUp(l); err != nil {
		return err
	}
	if lo, err := hd.LinkByName("lo"); err == nil {
		_ = hd.LinkSetUp(lo)
	}
	return nil
}

// AddHubAddr adds an extra address to the hub's end of spoke i's link (for
// tests that send from a source outside an allow-list).
func (st *Star) AddHubAddr(i int, a netip.Prefix) error {
	hh, err := netlink.NewHandleAt(st.Hub)
	if err != nil {
		return err
	}
	defer hh.Close()
	l, err := hh.LinkByName(st.Spokes[i].HubIf)
	if err != nil {
		return err
	}
	return hh.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), 32)}})
}

// Route makes the star one routed network: the hub forwards IPv4 and
// every spoke's default route is its hub address, so spokes reach one
// another (and whatever the hub routes) through the hub.
func (st *Star) Route() error {
	var err error
	if inErr := In(st.Hub, func() {
		// /proc/sys/net is the namespace of the thread that opens it.
		err = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0)
	}); inErr != nil {
		return inErr
	}
	if err != nil {
		return fmt.Errorf("vethpair: hub forwarding: %w", err)
	}
	for _, sp := range st.Spokes {
		sh, err := netlink.NewHandleAt(sp.NS)
		if err != nil {
			return err
		}
		err = sh.RouteAdd(&netlink.Route{Gw: sp.HubAddr.AsSlice()})
		sh.Close()
		if err != nil {
			return fmt.Errorf("vethpair: default route of %s via %v: %w", sp.Name, sp.HubAddr, err)
		}
	}
	return nil
}

// Close deletes every namespace of the star.
func (st *Star) Close() error {
	var errs []error
	if st.Hub.IsOpen() {
		st.Hub.Close()
		errs = append(errs, netns.DeleteNamed(st.HubName))
	}
	for _, sp := range st.Spokes {
		if sp.NS.IsOpen() {
			sp.NS.Close()
			errs = append(errs, netns.DeleteNamed(sp.Name))
		}
	}
	return errors.Join(errs...)
}
