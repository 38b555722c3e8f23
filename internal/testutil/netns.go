package testutil

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Hosts is a pair of network namespaces joined by a veth pair, made by a
// test for itself: A (the client side) and B (the agent side). Addresses are
// from the documentation ranges and exist only inside the two namespaces.
type Hosts struct {
	A, B         netns.NsHandle
	NameA, NameB string
	IfA, IfB     string // veth ends in A and B
	A4, B4       netip.Addr
	A6, B6       netip.Addr
}

var hostsSeq atomic.Uint32

// Documentation-range addresses used inside test namespaces.
var (
	HostA4 = netip.MustParseAddr("192.0.2.1")
	HostB4 = netip.MustParseAddr("192.0.2.2")
	HostA6 = netip.MustParseAddr("2001:db8::1")
	HostB6 = netip.MustParseAddr("2001:db8::2")
)

// NewHosts creates the namespaces and the veth pair; t.Cleanup removes them.
// It needs root; it skips (or fails in CI) without.
func NewHosts(t testing.TB) *Hosts {
	t.Helper()
	RequireRoot(t)
	n := hostsSeq.Add(1)
	h := &Hosts{
		NameA: fmt.Sprintf("regedge-t%d-a-%d", os.Getpid(), n), NameB: fmt.Sprintf("regedge-t%d-b-%d", os.Getpid(), n),
		IfA: fmt.Sprintf("rgA%d", n), IfB: fmt.Sprintf("rgB%d", n),
		A4: HostA4, B4: HostB4, A6: HostA6, B6: HostB6,
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	defer netns.Set(orig)

	if h.A, err = netns.NewNamed(h.NameA); err != nil {
		t.Fatalf("create netns %s: %v", h.NameA, err)
	}
	t.Cleanup(func() { h.A.Close(); netns.DeleteNamed(h.NameA) })
	if h.B, err = netns.NewNamed(h.NameB); err != nil {
		t.Fatalf("create netns %s: %v", h.NameB, err)
	}
	t.Cleanup(func() { h.B.Close(); netns.DeleteNamed(h.NameB) })
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}

	ha, err := netlink.NewHandleAt(h.A)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(h.B)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: h.IfA}, PeerName: h.IfB, PeerNamespace: netlink.NsFd(int(h.B))}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s: %v", h.IfA, h.IfB, err)
	}
	setup := func(hd *netlink.Handle, ifname string, a4, a6 netip.Addr) {
		l, err := hd.LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
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
				t.Fatalf("add %v to %s: %v", a.addr, ifname, err)
			}
		}
		if err := hd.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		lo, err := hd.LinkByName("lo")
		if err == nil {
			_ = hd.LinkSetUp(lo)
		}
	}
	setup(ha, h.IfA, h.A4, h.A6)
	setup(hb, h.IfB, h.B4, h.B6)
	return h
}

// In runs fn inside ns on the calling goroutine, its OS thread locked for
// the duration. Sockets fn opens stay in ns and may be used from any
// goroutine afterwards; goroutines fn starts do not inherit ns. fn may call
// t.Fatal: the deferred switch back still runs.
func In(t testing.TB, ns netns.NsHandle, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns: %v", err)
	}
	defer func() {
		// If switching back fails the thread stays locked and dies with
		// the goroutine rather than serve others in the wrong namespace.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	fn()
}
