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
func Create() (h *Hosts, err error) {
	n := seq.Add(1)
	h = &Hosts{
		NameA: fmt.Sprintf("regedge-%d-a-%d", os.Getpid(), n), NameB: fmt.Sprintf("regedge-%d-b-%d", os.Getpid(), n),
		IfA: fmt.Sprintf("rgA%d", n), IfB: fmt.Sprintf("rgB%d", n),
		A4: HostA4, B4: HostB4, A6: HostA6, B6: HostB6,
		A: netns.None(), B: netns.None(),
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	defer netns.Set(orig)
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
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("vethpair: setns: %w", err)
	}
	defer func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	fn()
	return nil
}
