//go:build linux

package loader

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/testutil"
)

// nsAddrs lists the addresses of h's namespace B as the watcher should
// see them: every address but those still in duplicate address detection.
func nsAddrs(t *testing.T, hd *netlink.Handle) []netip.Addr {
	t.Helper()
	all, err := hd.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, a := range all {
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		ip, _ := netip.AddrFromSlice(a.IP)
		out = append(out, ip.Unmap())
	}
	return out
}

func sameSet(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func localList(t *testing.T, o *Objects) LocalList {
	t.Helper()
	l, err := o.LocalAddrs()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func addrArg(p string) *netlink.Addr {
	pfx := netip.MustParsePrefix(p)
	a := &netlink.Addr{IPNet: &net.IPNet{IP: pfx.Addr().AsSlice(), Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen())}}
	if pfx.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// TestLocalAddrsFollowTheNamespace: the datapath opened in namespace B
// fills config_map's local list with B's addresses (the attached
// interface's first), and follows addresses added and removed at runtime,
// IPv4 and IPv6; with more addresses than fit, the list says it is
// incomplete and keeps the attached interface's address.
func TestLocalAddrsFollowTheNamespace(t *testing.T) {
	h := testutil.NewHosts(t)
	fs := testBPFFS(t)
	dp := openIn(t, h, Config{Options: DefaultOptions(), BPFFS: fs, Interfaces: []string{h.IfB}})
	defer dp.Close()
	hb, err := netlink.NewHandleAt(h.B)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	veth, err := hb.LinkByName(h.IfB)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := hb.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}

	// Right after Open: B's addresses, all of them (fewer than fit). The
	// veth's IPv6 link-local address may still be tentative: listed once
	// it is not (netlink reports that change too).
	testutil.Eventually(t, 5*time.Second, "the local list equal to B's addresses", func() bool {
		l := localList(t, dp.Objects)
		return !l.Incomplete && sameSet(l.Addrs, nsAddrs(t, hb))
	})
	l := localList(t, dp.Objects)
	for _, want := range []netip.Addr{h.B4, h.B6, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		if !slices.Contains(l.Addrs, want) {
			t.Errorf("the local list %v lacks %s", l.Addrs, want)
		}
	}
	if l.Addrs[0] != h.B4 {
		t.Errorf("the local list %v does not start with the attached interface's %s", l.Addrs, h.B4)
	}
	if err := dp.LocalWatchErr(); err != nil {
		t.Errorf("watcher: %v", err)
	}

	follows := func(a *netlink.Addr, link netlink.Link, want netip.Addr) {
		t.Helper()
		if err := hb.AddrAdd(link, a); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%s added to the local list", want), func() bool {
			return slices.Contains(localList(t, dp.Objects).Addrs, want)
		})
		if err := hb.AddrDel(link, a); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%s removed from the local list", want), func() bool {
			return !slices.Contains(localList(t, dp.Objects).Addrs, want)
		})
	}
	follows(addrArg("203.0.113.7/32"), veth, netip.MustParseAddr("203.0.113.7"))
	follows(addrArg("2001:db8:77::1/128"), lo, netip.MustParseAddr("2001:db8:77::1"))

	// Ten more IPv4 addresses on lo: more than fit. The list says so, and
	// the attached interface's address keeps its slot.
	var extra []*netlink.Addr
	for i := 1; i <= 10; i++ {
		a := addrArg(fmt.Sprintf("198.18.0.%d/32", i))
		if err := hb.AddrAdd(lo, a); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, a)
	}
	testutil.Eventually(t, 5*time.Second, "the local list marked incomplete", func() bool {
		return localList(t, dp.Objects).Incomplete
	})
	l = localList(t, dp.Objects)
	var v4 int
	for _, a := range l.Addrs {
		if a.Is4() {
			v4++
		}
	}
	if v4 != localV4 || !slices.Contains(l.Addrs, h.B4) {
		t.Errorf("a full list: %d IPv4 addresses (want %d), %v, want %s kept", v4, localV4, l.Addrs, h.B4)
	}
	for _, a := range extra {
		if err := hb.AddrDel(lo, a); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the local list complete again", func() bool {
		l := localList(t, dp.Objects)
		return !l.Incomplete && sameSet(l.Addrs, nsAddrs(t, hb))
	})
}

// TestLocalListSkipsTheFIB: in namespace B with forwarding on, an invalid
// bus datagram to A's address is, for the FIB, a packet B forwards: it
// passes unjudged. Once the local list holds A's address (as if it were
// B's), the program takes it for its own without the FIB and drops it;
// over IPv4 and IPv6. A frame the list check does not read (a VLAN tag)
// still goes to the FIB. The list is an addition to the FIB's answer,
// never a replacement of it.
func TestLocalListSkipsTheFIB(t *testing.T) {
	h := testutil.NewHosts(t)
	o := loadForTest(t)
	bad := validDatagram()
	bad[len(bad)-1] ^= 1
	to := func(dst netip.Addr, vlans int) []byte {
		src := testSrc4
		if dst.Is6() {
			src = testSrc6
		}
		return packet{src: src, dst: dst, sport: 40000, dport: 4874, vlans: vlans, payload: bad}.bytes()
	}
	testutil.In(t, h.B, func() {
		for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, dst := range []netip.Addr{h.A4, h.A6} {
			if _, r := runXDP(t, o, to(dst, 0)); r != notJudged {
				t.Errorf("to %s, forwarded, not on the list: %s, want not judged", dst, verdictWord(r))
			}
		}
		if err := o.SetLocalAddrs([]netip.Addr{h.A4, h.A6}); err != nil {
			t.Fatal(err)
		}
		for _, dst := range []netip.Addr{h.A4, h.A6} {
			if ret, r := runXDP(t, o, to(dst, 0)); r != ReasonChecksum || ret != xdpDrop {
				t.Errorf("to %s, on the list: %s (action %d), want dropped as checksum", dst, verdictWord(r), ret)
			}
			if _, r := runXDP(t, o, to(dst, 1)); r != notJudged {
				t.Errorf("to %s behind a VLAN tag: %s, want not judged (the FIB decides)", dst, verdictWord(r))
			}
		}
		if err := o.SetLocalAddrs(nil); err != nil {
			t.Fatal(err)
		}
		if _, r := runXDP(t, o, to(h.A4, 0)); r != notJudged {
			t.Errorf("to %s, taken off the list: %s, want not judged", h.A4, verdictWord(r))
		}
	})
}

// TestSetLocalAddrs: the list keeps the first addresses of each family in
// the order given, skips what is no unicast address and repeats, and says
// when some did not fit.
func TestSetLocalAddrs(t *testing.T) {
	o := loadForTest(t)
	var in []netip.Addr
	in = append(in, netip.IPv4Unspecified(), netip.MustParseAddr("224.0.0.1"), netip.MustParseAddr("ff02::1"))
	for i := 1; i <= localV4; i++ {
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		in = append(in, a, a) // each twice: one slot
	}
	in = append(in, netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fe80::1"))
	if err := o.SetLocalAddrs(in); err != nil {
		t.Fatal(err)
	}
	l := localList(t, o)
	if l.Incomplete || len(l.Addrs) != localV4+2 || l.Addrs[0] != netip.MustParseAddr("10.0.0.1") || l.Addrs[localV4] != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("list %v, incomplete %v; want 10.0.0.1..8, 2001:db8::1, fe80::1, complete", l.Addrs, l.Incomplete)
	}
	if err := o.SetLocalAddrs(append(in, netip.MustParseAddr("10.0.0.99"))); err != nil {
		t.Fatal(err)
	}
	if l := localList(t, o); !l.Incomplete || slices.Contains(l.Addrs, netip.MustParseAddr("10.0.0.99")) {
		t.Errorf("a ninth IPv4 address: list %v, incomplete %v; want it left out and the list incomplete", l.Addrs, l.Incomplete)
	}
	// Only the local list's fields change.
	before := liveConfig(t, o)
	if err := o.SetLocalAddrs(nil); err != nil {
		t.Fatal(err)
	}
	after := liveConfig(t, o)
	if after.Local4N != 0 || after.Local6N != 0 || after.LocalFlags != 0 {
		t.Errorf("an empty list: %d, %d, flags %d", after.Local4N, after.Local6N, after.LocalFlags)
	}
	after.Local4N, after.Local6N, after.LocalFlags, after.Local4, after.Local6 = before.Local4N, before.Local6N, before.LocalFlags, before.Local4, before.Local6
	if after != before {
		t.Error("SetLocalAddrs changed fields other than the local list's")
	}
}

// TestOrderLocal: attached interfaces' addresses first, then by scope
// (global before link before host), then by address.
func TestOrderLocal(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	got := orderLocal([]nodeAddr{
		{addr: a("127.0.0.1"), scope: unix.RT_SCOPE_HOST},
		{addr: a("10.1.0.2")},
		{addr: a("fe80::1"), attached: true, scope: unix.RT_SCOPE_LINK},
		{addr: a("10.0.0.9"), attached: true},
		{addr: a("10.0.0.3")},
	})
	want := []netip.Addr{a("10.0.0.9"), a("fe80::1"), a("10.0.0.3"), a("10.1.0.2"), a("127.0.0.1")}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

// openSockets counts this process's open sockets.
func openSockets(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestLocalWatchOverflowLeaksNoSocket: a burst of address changes larger
// than the subscription's socket buffer (here: thousands of addresses added
// while the watcher waits to write the list) ends the netlink subscription;
// the watcher subscribes again and lists again. The ended subscription's
// socket must be closed then, not kept (still subscribed, its buffer full)
// until the datapath closes: each overflow would leak a socket and its
// kernel buffer, and whoever can cause address churn (router
// advertisements, containers coming and going) could cause overflows.
func TestLocalWatchOverflowLeaksNoSocket(t *testing.T) {
	h := testutil.NewHosts(t)
	fs := testBPFFS(t)
	var mu sync.Mutex
	var reported []error
	var listAtReport []int // the list's length when each failure was reported
	var dp *Datapath
	dp = openIn(t, h, Config{Options: DefaultOptions(), BPFFS: fs, Interfaces: []string{h.IfB},
		LocalAddrError: func(err error) {
			n := len(localList(t, dp.Objects).Addrs)
			mu.Lock()
			reported, listAtReport = append(reported, err), append(listAtReport, n)
			mu.Unlock()
		}})
	defer dp.Close()
	hb, err := netlink.NewHandleAt(h.B)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	lo, err := hb.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the local list equal to B's addresses", func() bool {
		return sameSet(localList(t, dp.Objects).Addrs, nsAddrs(t, hb))
	})
	before := openSockets(t)

	const rounds, burst = 3, 3000
	for r := range rounds {
		mu.Lock()
		seen := len(reported)
		mu.Unlock()
		// The watcher's write waits for cfgMu: its subscription's
		// channel and socket buffer fill while the addresses are added.
		dp.Objects.cfgMu.Lock()
		for i := range burst {
			a := addrArg(fmt.Sprintf("198.%d.%d.%d/32", 18+r, i/250, i%250+1))
			if err := hb.AddrAdd(lo, a); err != nil {
				dp.Objects.cfgMu.Unlock()
				t.Fatal(err)
			}
		}
		dp.Objects.cfgMu.Unlock()
		testutil.Eventually(t, 10*time.Second, "the subscription's end reported", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(reported) > seen
		})
		testutil.Eventually(t, 10*time.Second, "the watcher subscribed and listed again", func() bool {
			return dp.LocalWatchErr() == nil && localList(t, dp.Objects).Incomplete
		})
	}
	mu.Lock()
	for i, n := range listAtReport {
		if n != 0 {
			t.Errorf("failure %d (%v) reported with %d addresses still on the list: updates were lost, the list must be empty until the next listing", i, reported[i], n)
		}
	}
	mu.Unlock()
	if after := openSockets(t); after > before {
		t.Errorf("%d sockets open after %d subscription overflows, %d before: the ended subscriptions' sockets were kept", after, rounds, before)
	}
}
