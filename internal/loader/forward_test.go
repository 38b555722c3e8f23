//go:build linux

package loader

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/regedge/regedge/internal/testutil"
)

// behindB adds a third namespace C (a pod, a VM: a host the node routes
// for) behind B: veth B(198.51.100.1) - C(198.51.100.2), forwarding on in B,
// routes in A and C through B. t.Cleanup removes it.
func behindB(t *testing.T, h *testutil.Hosts) netns.NsHandle {
	t.Helper()
	name := fmt.Sprintf("regedge-%d-c-%s", os.Getpid(), h.IfB)
	var c netns.NsHandle
	testutil.In(t, h.B, func() {
		var err error
		if c, err = netns.NewNamed(name); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { c.Close(); netns.DeleteNamed(name) })
	hb, err := netlink.NewHandleAt(h.B)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	hc, err := netlink.NewHandleAt(c)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	ha, err := netlink.NewHandleAt(h.A)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	bIf, cIf := "fw"+h.IfB, "pod"+h.IfB
	if err := hb.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: bIf}, PeerName: cIf, PeerNamespace: netlink.NsFd(int(c))}); err != nil {
		t.Fatal(err)
	}
	up := func(hd *netlink.Handle, ifname, addr string) netlink.Link {
		l, err := hd.LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr(addr)
		if err := hd.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		if err := hd.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	up(hb, bIf, "198.51.100.1/24")
	cl := up(hc, cIf, "198.51.100.2/24")
	if lo, err := hc.LinkByName("lo"); err == nil {
		hc.LinkSetUp(lo)
	}
	if err := hc.RouteAdd(&netlink.Route{LinkIndex: cl.Attrs().Index, Gw: net.ParseIP("198.51.100.1")}); err != nil {
		t.Fatal(err)
	}
	al, err := ha.LinkByName(h.IfA)
	if err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("198.51.100.0/24")
	if err := ha.RouteAdd(&netlink.Route{LinkIndex: al.Attrs().Index, Dst: dst, Gw: net.ParseIP("192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	testutil.In(t, h.B, func() {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	return c
}

// TestForwardedTrafficNotJudged: on a node that routes for others (pods of a
// routed CNI, VMs), packets to the agent's port numbers but to another
// host's address cross the attached interface. They are not the agent's:
// a Verdaccio pod listens on 4873 too. XDP in B, A on the block list; from
// A, a datagram that is no bus datagram reaches C's port 4874 and a TCP
// connection reaches C's port 4873, and no drop is counted; the same
// packets to B itself are still judged and dropped. B's addresses are on
// the local list (judged without the FIB), C's is not (the FIB finds the
// route out).
func TestForwardedTrafficNotJudged(t *testing.T) {
	h := testutil.NewHosts(t)
	fs := testBPFFS(t)
	c := behindB(t, h)
	dp := openIn(t, h, Config{Options: DefaultOptions(), BPFFS: fs, Interfaces: []string{h.IfB}})
	defer dp.Close()
	local, err := dp.LocalAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.2", "198.51.100.1"} {
		if !slices.Contains(local.Addrs, netip.MustParseAddr(a)) {
			t.Errorf("B's address %s is not on the local list %v", a, local.Addrs)
		}
	}
	if slices.Contains(local.Addrs, netip.MustParseAddr("198.51.100.2")) {
		t.Errorf("C's address is on B's local list %v", local.Addrs)
	}

	var podUDP, ownUDP *net.UDPConn
	var podTCP, ownTCP net.Listener
	testutil.In(t, c, func() {
		var err error
		if podUDP, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("198.51.100.2"), Port: 4874}); err != nil {
			t.Fatal(err)
		}
		if podTCP, err = net.Listen("tcp", "198.51.100.2:4873"); err != nil {
			t.Fatal(err)
		}
	})
	defer podUDP.Close()
	defer podTCP.Close()
	testutil.In(t, h.B, func() {
		var err error
		if ownTCP, err = net.Listen("tcp", "192.0.2.2:4873"); err != nil {
			t.Fatal(err)
		}
	})
	defer ownTCP.Close()
	ownUDP = udpIn(t, h, "B", "192.0.2.2:4874")
	serveHi(podTCP, ownTCP)
	send := udpIn(t, h, "A", "192.0.2.1:0")
	dial := func(addr string) error { return dialHi(t, h, addr) }
	// The route works before anything is blocked.
	if err := dial("198.51.100.2:4873"); err != nil {
		t.Fatalf("the pod's port 4873 through B: %v", err)
	}
	if err := dp.Objects.Block(netip.MustParsePrefix("192.0.2.1/32"), time.Hour); err != nil {
		t.Fatal(err)
	}
	before, err := dp.Objects.Counters()
	if err != nil {
		t.Fatal(err)
	}
	notBus := []byte("an application's own datagram on port 4874")
	if _, err := send.WriteToUDP(notBus, &net.UDPAddr{IP: net.ParseIP("198.51.100.2"), Port: 4874}); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, podUDP, 1, 2*time.Second); len(got) != 1 {
		t.Error("a datagram to another host's port 4874 was dropped at B")
	}
	if err := dial("198.51.100.2:4873"); err != nil {
		t.Errorf("a blocked source's connection to another host's port 4873 was dropped at B: %v", err)
	}
	after, err := dp.Objects.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for r := ReasonLength; r < NumReasons; r++ {
		if after[r] != before[r] {
			t.Errorf("forwarded traffic counted as %d drops (%v)", after[r]-before[r], r)
		}
	}

	// B's own ports are judged as before.
	if _, err := send.WriteToUDP(notBus, &net.UDPAddr{IP: net.ParseIP("192.0.2.2"), Port: 4874}); err != nil {
		t.Fatal(err)
	}
	if got := drain(ownUDP, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("B's bus socket got %d invalid datagrams", len(got))
	}
	if err := dial("192.0.2.2:4873"); err == nil {
		t.Error("B's proxy port answered a blocked source")
	}
	final, err := dp.Objects.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var dropped uint64
	for r := ReasonLength; r < NumReasons; r++ {
		dropped += final[r] - after[r]
	}
	if final[ReasonBlocked] == after[ReasonBlocked] || dropped < 2 {
		t.Errorf("B's own packets not counted as drops: %d drops, blocked %d->%d", dropped, after[ReasonBlocked], final[ReasonBlocked])
	}
}
