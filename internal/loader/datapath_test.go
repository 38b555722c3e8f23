//go:build linux

package loader

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/vectors"
)

// testBPFFS mounts a bpffs of the test's own on a temporary directory, so
// the test's pins never meet a real agent's; unmounted at cleanup.
func testBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mounted, err := EnsureBPFFS(dir)
	if err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("cannot mount bpffs: %v", err))
	}
	if !mounted {
		t.Fatalf("%s was already bpffs", dir)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// openIn opens the datapath inside the hosts' B namespace.
func openIn(t *testing.T, h *testutil.Hosts, cfg Config) *Datapath {
	t.Helper()
	var dp *Datapath
	testutil.In(t, h.B, func() {
		var err error
		dp, err = Open(cfg)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
	})
	if err := dp.SetAllow([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")}); err != nil {
		t.Fatal(err)
	}
	return dp
}

func udpIn(t *testing.T, h *testutil.Hosts, ns string, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	handle := h.A
	if ns == "B" {
		handle = h.B
	}
	testutil.In(t, handle, func() {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if c, err = net.ListenUDP("udp", a); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads datagrams until want have arrived or the deadline passes.
func receive(t *testing.T, c *net.UDPConn, want int, within time.Duration) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, 2048)
	deadline := time.Now().Add(within)
	for len(got) < want {
		c.SetReadDeadline(deadline)
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			break
		}
		got = append(got, append([]byte(nil), buf[:n]...))
	}
	return got
}

// drain reads what arrives within d (used to prove nothing more arrives).
func drain(c *net.UDPConn, d time.Duration) [][]byte {
	var got [][]byte
	buf := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(d))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return got
		}
		got = append(got, append([]byte(nil), buf[:n]...))
	}
}

// TestBusOverVeth: XDP attached in B; valid and invalid datagrams sent with
// real sockets from A; exactly the valid ones reach B's socket and the drop
// counters match the vectors' reasons.
func TestBusOverVeth(t *testing.T) {
	h := testutil.NewHosts(t)
	dp := openIn(t, h, Config{Options: DefaultOptions(), BPFFS: testBPFFS(t), Interfaces: []string{h.IfB}})
	defer dp.Close()
	knowRegistries(t, dp.Objects, 0xa1b2c3d4)
	recv4 := udpIn(t, h, "B", "192.0.2.2:4874")
	recv6 := udpIn(t, h, "B", "[2001:db8::2]:4874")
	send := udpIn(t, h, "A", ":0")

	all, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	// Prime neighbour resolution with one valid datagram each way.
	valid := all.Datagrams[0].Bytes()
	for _, dst := range []string{"192.0.2.2:4874", "[2001:db8::2]:4874"} {
		a, _ := net.ResolveUDPAddr("udp", dst)
		if _, err := send.WriteToUDP(valid, a); err != nil {
			t.Fatal(err)
		}
	}
	if len(receive(t, recv4, 1, 5*time.Second)) != 1 || len(receive(t, recv6, 1, 5*time.Second)) != 1 {
		t.Fatal("the priming datagrams did not arrive")
	}
	before, err := dp.Counters()
	if err != nil {
		t.Fatal(err)
	}

	var wantValid [][]byte
	wantDrops := map[string]uint64{}
	for _, v := range all.Datagrams {
		for _, dst := range []string{"192.0.2.2:4874", "[2001:db8::2]:4874"} {
			a, _ := net.ResolveUDPAddr("udp", dst)
			if _, err := send.WriteToUDP(v.Bytes(), a); err != nil {
				t.Fatal(err)
			}
		}
		if v.Verdict == "ok" {
			wantValid = append(wantValid, v.Bytes())
		} else {
			wantDrops[v.Verdict] += 2
		}
	}
	got4 := receive(t, recv4, len(wantValid), 5*time.Second)
	got6 := receive(t, recv6, len(wantValid), 5*time.Second)
	// Nothing else may follow: give stragglers a moment to show up.
	got4 = append(got4, drain(recv4, 200*time.Millisecond)...)
	got6 = append(got6, drain(recv6, 50*time.Millisecond)...)
	for name, got := range map[string][][]byte{"IPv4": got4, "IPv6": got6} {
		if len(got) != len(wantValid) {
			t.Errorf("%s: %d datagrams reached the socket, want the %d valid ones", name, len(got), len(wantValid))
		}
		for i := range got {
			if i < len(wantValid) && !bytes.Equal(got[i], wantValid[i]) {
				t.Errorf("%s: datagram %d is %x, want %x", name, i, got[i], wantValid[i])
			}
		}
	}
	after, err := dp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for r := ReasonLength; r < NumReasons; r++ {
		if d := after[r] - before[r]; d != wantDrops[r.String()] {
			t.Errorf("drops for %s: %d, want %d", r, d, wantDrops[r.String()])
		}
	}
	if d := after[ReasonOK] - before[ReasonOK]; d < uint64(2*len(wantValid)) {
		t.Errorf("passes: %d, want at least %d", d, 2*len(wantValid))
	}
	counters, err := dp.RegistryCounters()
	if err != nil {
		t.Fatal(err)
	}
	var perHash uint64
	for _, c := range counters {
		if c.Hash == 0xa1b2c3d4 && !c.Egress {
			perHash = c.Packets
		}
	}
	if perHash < uint64(2*len(wantValid)) {
		t.Errorf("registry 0xa1b2c3d4 ingress packets %d, want at least %d", perHash, 2*len(wantValid))
	}

	// A source off the allow-list: dropped with reason source.
	if err := dp.SetAllow([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}); err != nil {
		t.Fatal(err)
	}
	a, _ := net.ResolveUDPAddr("udp", "192.0.2.2:4874")
	if _, err := send.WriteToUDP(valid, a); err != nil {
		t.Fatal(err)
	}
	if got := drain(recv4, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("a datagram from outside the allow-list reached the socket")
	}
	final, _ := dp.Counters()
	if final[ReasonSource]-after[ReasonSource] != 1 {
		t.Errorf("source drops %d, want 1", final[ReasonSource]-after[ReasonSource])
	}
}

// TestSkLookupSteersToUnboundPort: a connection to 192.0.2.2:4873 reaches a
// listener bound to another address and port.
func TestSkLookupSteersToUnboundPort(t *testing.T) {
	h := testutil.NewHosts(t)
	dp := openIn(t, h, Config{Options: DefaultOptions(), BPFFS: testBPFFS(t), SkLookup: true})
	defer dp.Close()
	var ln, ln6 *net.TCPListener
	testutil.In(t, h.B, func() {
		// Go's default listener is MPTCP, which the SOCKMAP refuses.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := dp.RegisterProxySocket(l.(*net.TCPListener)); err == nil || !strings.Contains(err.Error(), "MPTCP") {
			t.Errorf("registering a default (MPTCP) listener: %v, want an error naming MPTCP", err)
		}
		l.Close()
		lc := ListenConfig()
		if l, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		ln = l.(*net.TCPListener)
		if l, err = lc.Listen(context.Background(), "tcp6", "[::1]:0"); err != nil {
			t.Fatal(err)
		}
		ln6 = l.(*net.TCPListener)
	})
	defer ln.Close()
	defer ln6.Close()
	for _, l := range []*net.TCPListener{ln, ln6} {
		if err := dp.RegisterProxySocket(l); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []Destination{
		{Prefix: netip.MustParsePrefix("192.0.2.2/32"), Port: 4873},
		{Prefix: netip.MustParsePrefix("2001:db8::/64"), Port: 4873},
	} {
		if err := dp.Steer(d); err != nil {
			t.Fatal(err)
		}
	}
	accepted := make(chan netip.AddrPort, 2)
	for _, l := range []*net.TCPListener{ln, ln6} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				accepted <- c.LocalAddr().(*net.TCPAddr).AddrPort()
				c.Close()
			}
		}()
	}
	for _, dst := range []string{"192.0.2.2:4873", "[2001:db8::2]:4873"} {
		testutil.In(t, h.A, func() {
			c, err := net.DialTimeout("tcp", dst, 5*time.Second)
			if err != nil {
				t.Fatalf("dial %s: %v", dst, err)
			}
			c.Close()
		})
		select {
		case local := <-accepted:
			if local != netip.MustParseAddrPort(dst) {
				t.Errorf("accepted with local address %v, want %s", local, dst)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no connection for %s reached the listener on %v", dst, ln.Addr())
		}
	}
	// A destination that is not steered takes the normal lookup: refused.
	testutil.In(t, h.A, func() {
		if c, err := net.DialTimeout("tcp", "192.0.2.2:4875", 2*time.Second); err == nil {
			c.Close()
			t.Fatal("an unsteered port was answered")
		}
	})
	if steered, _, err := dp.SteerCounters(); err != nil || steered < 2 {
		t.Fatalf("steered %d, %v", steered, err)
	}
}

// TestRestartKeepsPinsAndDetachLeavesNothing: pins survive Close and keep
// judging packets while no agent runs; a new Open reuses the counters; Detach
// leaves no regedge program in the kernel.
func TestRestartKeepsPinsAndDetachLeavesNothing(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := testBPFFS(t)
	cfg := Config{Options: DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}}
	dp := openIn(t, h, cfg)
	recv := udpIn(t, h, "B", "192.0.2.2:4874")
	send := udpIn(t, h, "A", ":0")
	dst, _ := net.ResolveUDPAddr("udp", "192.0.2.2:4874")
	valid := codec.Update(codec.FieldRows, 40)
	validDG := codec.AppendDatagram(nil, codec.DefaultState(), &valid)
	bad := append([]byte(nil), validDG...)
	bad[len(bad)-1] ^= 0xff // checksum

	sendBoth := func() {
		t.Helper()
		for _, b := range [][]byte{bad, validDG} {
			if _, err := send.WriteToUDP(b, dst); err != nil {
				t.Fatal(err)
			}
		}
		got := receive(t, recv, 1, 5*time.Second)
		got = append(got, drain(recv, 200*time.Millisecond)...)
		if len(got) != 1 || !bytes.Equal(got[0], validDG) {
			t.Fatalf("received %x, want only the valid datagram", got)
		}
	}
	sendBoth()
	c1, _ := dp.Counters()
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}

	// No agent: the pinned link keeps the program attached.
	sendBoth()

	dp2 := openIn(t, h, cfg)
	c2, err := dp2.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c2[ReasonChecksum] != c1[ReasonChecksum]+1 {
		t.Fatalf("checksum drops after restart %d, want %d (one more while down)", c2[ReasonChecksum], c1[ReasonChecksum]+1)
	}
	if got := dp2.Links(); strings.Join(got, ",") != "tcx-egress-"+h.IfB+",tcx-ingress-"+h.IfB+",xdp-"+h.IfB {
		t.Fatalf("links after restart %v", got)
	}
	sendBoth()
	ours := programIDs(t, dp2.Objects)
	if err := dp2.Close(); err != nil {
		t.Fatal(err)
	}

	testutil.In(t, h.B, func() {
		if err := Detach(bpffs, []string{h.IfB}); err != nil {
			t.Fatalf("Detach: %v", err)
		}
	})
	if entries, _ := os.ReadDir(PinRoot(bpffs)); len(entries) != 0 {
		t.Fatalf("pins left after detach: %v", entries)
	}
	// Without XDP the invalid datagram reaches the socket too.
	if _, err := send.WriteToUDP(bad, dst); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, recv, 1, 5*time.Second); len(got) != 1 {
		t.Fatal("after detach the datagram did not arrive: XDP still attached?")
	}
	// This test's programs are gone; other test binaries running at the
	// same time may have regedge programs of their own loaded.
	testutil.Eventually(t, 10*time.Second, "none of this test's programs left in the kernel", func() bool {
		for _, id := range ours {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				return false
			}
		}
		return true
	})
}

// programIDs lists the kernel IDs of o's programs.
func programIDs(t *testing.T, o *Objects) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{o.xdp.RegedgeXdp, o.tc.RegedgeTcIngress, o.tc.RegedgeTcEgress, o.sk.RegedgeSkLookup} {
		if p == nil {
			continue
		}
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, ok := info.ID()
		if !ok {
			t.Fatal("the kernel does not give program IDs")
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		t.Fatal("no programs loaded")
	}
	return ids
}

// TestClsactFallback exercises the attachment used where the kernel has no
// TCX: clsact with a direct-action filter, and its removal by Detach.
func TestClsactFallback(t *testing.T) {
	h := testutil.NewHosts(t)
	o := loadForTest(t)
	bpffs := testBPFFS(t)
	testutil.In(t, h.B, func() {
		idx, err := ifindex(h.IfB)
		if err != nil {
			t.Fatal(err)
		}
		for _, ingress := range []bool{true, false} {
			prog := o.TCEgress()
			if ingress {
				prog = o.TCIngress()
			}
			if err := clsactAttach(idx, ingress, prog); err != nil {
				t.Fatalf("clsact: %v", err)
			}
		}
	})
	beforeTC, _ := o.TCCounters()
	// TC counts the packets of proxy connections: make one.
	var ln net.Listener
	testutil.In(t, h.B, func() {
		var err error
		if ln, err = net.Listen("tcp", "192.0.2.2:4873"); err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	testutil.In(t, h.A, func() {
		c, err := net.DialTimeout("tcp", "192.0.2.2:4873", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(c)
		c.Close()
	})
	testutil.Eventually(t, 5*time.Second, "the clsact TC program to see packets", func() bool {
		c, _ := o.TCCounters()
		return c[ReasonOK] > beforeTC[ReasonOK]
	})
	testutil.In(t, h.B, func() {
		ours := func() int {
			l, err := netlink.LinkByName(h.IfB)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				fs, _ := netlink.FilterList(l, parent)
				for _, f := range fs {
					if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == filterName {
						n++
					}
				}
			}
			return n
		}
		if n := ours(); n != 2 {
			t.Fatalf("%d regedge clsact filters before Detach, want 2", n)
		}
		if err := Detach(bpffs, []string{h.IfB}); err != nil {
			t.Fatalf("Detach: %v", err)
		}
		if n := ours(); n != 0 {
			t.Errorf("%d regedge clsact filters left after Detach", n)
		}
	})
}
