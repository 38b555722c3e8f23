//go:build linux

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
	if h.A, err = newNamed(h.NameA); err != nil {
		return nil, err
	}
	if h.B, err = newNamed(h.NameB); err != nil {
		return nil, err
	}
	if err := netns.Set(orig); err != nil {
		return nil, err
	}
	if err := h.link(); err != nil {
		return nil, err
	}
	return h, nil
}

// link adds the veth pair between A and B and sets up both ends.
func (h *Hosts) link() error {
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
	if err := addVeth(ha, h.IfA, h.IfB, h.B); err != nil {
		return err
	}
	return errors.Join(
		setup(ha, h.IfA, netip.PrefixFrom(h.A4, 24), netip.PrefixFrom(h.A6, 64)),
		setup(hb, h.IfB, netip.PrefixFrom(h.B4, 24), netip.PrefixFrom(h.B6, 64)))
}

// newNamed creates a named network namespace (visible to `ip netns`) and
// moves the calling thread into it (see lockedIn).
func newNamed(name string) (netns.NsHandle, error) {
	ns, err := netns.NewNamed(name)
	if err != nil {
		return netns.None(), fmt.Errorf("vethpair: create netns %s: %w", name, err)
	}
	return ns, nil
}

// deleteNamed closes ns and deletes the namespace named name, if it was made.
func deleteNamed(ns netns.NsHandle, name string) error {
	if !ns.IsOpen() {
		return nil
	}
	ns.Close()
	return netns.DeleteNamed(name)
}

// addVeth adds a veth pair through hd: name in hd's namespace, peer in
// peerNS.
func addVeth(hd *netlink.Handle, name, peer string, peerNS netns.NsHandle) error {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(int(peerNS))}
	if err := hd.LinkAdd(veth); err != nil {
		return fmt.Errorf("vethpair: add veth %s/%s: %w", name, peer, err)
	}
	return nil
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
	l, err := ha.LinkByName(h.IfA)
	if err == nil {
		err = ha.LinkDel(l) // takes the peer with it
	}
	ha.Close()
	if err != nil {
		return fmt.Errorf("vethpair: delete %s: %w", h.IfA, err)
	}
	return h.link()
}

// setup gives ifname (in hd's namespace) its addresses and brings it and
// the namespace's loopback up. IPv6 addresses skip duplicate address
// detection, so that they are usable at once.
func setup(hd *netlink.Handle, ifname string, addrs ...netip.Prefix) error {
	l, err := hd.LinkByName(ifname)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := hd.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("vethpair: add %v to %s: %w", a.Addr(), ifname, err)
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
	return errors.Join(deleteNamed(h.A, h.NameA), deleteNamed(h.B, h.NameB))
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
	if st.Hub, err = newNamed(st.HubName); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		sp := Spoke{
			Name: fmt.Sprintf("regedge-%d-s%d-%d", os.Getpid(), i, id), NS: netns.None(),
			If: fmt.Sprintf("rgS%d_%d", id, i), HubIf: fmt.Sprintf("rgH%d_%d", id, i),
			Addr:    netip.AddrFrom4([4]byte{192, 0, 2, byte(4*i + 2)}),
			HubAddr: netip.AddrFrom4([4]byte{192, 0, 2, byte(4*i + 1)}),
		}
		if sp.NS, err = newNamed(sp.Name); err != nil {
			return nil, err
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
		if err := addVeth(hh, sp.HubIf, sp.If, sp.NS); err != nil {
			return nil, err
		}
		sh, err := netlink.NewHandleAt(sp.NS)
		if err != nil {
			return nil, err
		}
		err = errors.Join(setup(hh, sp.HubIf, netip.PrefixFrom(sp.HubAddr, 30)), setup(sh, sp.If, netip.PrefixFrom(sp.Addr, 30)))
		sh.Close()
		if err != nil {
			return nil, err
		}
	}
	return st, nil
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
	errs := []error{deleteNamed(st.Hub, st.HubName)}
	for _, sp := range st.Spokes {
		errs = append(errs, deleteNamed(sp.NS, sp.Name))
	}
	return errors.Join(errs...)
}
