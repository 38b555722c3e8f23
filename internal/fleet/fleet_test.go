package fleet

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/testutil"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// edge is one Fleet on a loopback address, recording what it marks.
type edge struct {
	*Fleet
	mu     sync.Mutex
	marked []string
	cancel context.CancelFunc
	done   chan error
}

func (e *edge) marks() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.marked)
}

func (e *edge) count(direction, result string) int {
	return int(promtest.ToFloat64(e.hints.WithLabelValues(direction, result)))
}

func startEdge(t *testing.T, conn *net.UDPConn, o Options) *edge {
	t.Helper()
	e := &edge{done: make(chan error, 1)}
	o.Receive = true
	o.Mark = func(pkgs []string) int {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.marked = append(e.marked, pkgs...)
		return len(pkgs)
	}
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	e.Fleet = New(conn, o)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-e.done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return e
}

// listenSamePort binds 127.0.0.1, .2 and .3 on one port, as the pods of a
// DaemonSet all listen on 4875.
func listenSamePort(t *testing.T, n int) ([]*net.UDPConn, uint16) {
	t.Helper()
	for try := 0; try < 20; try++ {
		first, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := first.LocalAddr().(*net.UDPAddr).Port
		conns := []*net.UDPConn{first}
		for i := 2; i <= n; i++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(i)), Port: port})
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		if len(conns) == n {
			return conns, uint16(port)
		}
		for _, c := range conns {
			c.Close()
		}
	}
	t.Fatal("no port free on 127.0.0.1..3")
	return nil, 0
}

// TestHintReachesEveryPeerButItself: three edges, their peers one dns:
// name whose records are all three (a headless Service). A hint from one
// reaches the two others, never itself; when the records change, the
// peers follow.
func TestHintReachesEveryPeerButItself(t *testing.T) {
	dns := testutil.NewDNSServer(t)
	conns, port := listenSamePort(t, 3)
	ip := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, i}) }
	dns.Set("edges.fleet.test.", ip(1), ip(2), ip(3))
	peers, _ := ParsePeers([]string{"dns:edges.fleet.test:" + itoa(port)})
	var edges []*edge
	for _, c := range conns {
		edges = append(edges, startEdge(t, c, Options{Peers: peers, Resolver: dns.Resolver(), ResolveInterval: 20 * time.Millisecond}))
	}
	a, b, c := edges[0], edges[1], edges[2]
	waitFor(t, "every edge to resolve its two peers", func() bool {
		for _, e := range edges {
			if len(e.Peers()) != 2 {
				return false
			}
		}
		return true
	})
	if got := a.Peers(); slices.Contains(got, a.Addr()) {
		t.Fatalf("a's peers %v include itself", got)
	}

	a.Notify("peers-hello")
	waitFor(t, "b and c to mark peers-hello", func() bool {
		return slices.Equal(b.marks(), []string{"peers-hello"}) && slices.Equal(c.marks(), []string{"peers-hello"})
	})
	if a.count("sent", ResultOK) != 2 || b.count("received", ResultOK) != 1 || c.count("received", ResultOK) != 1 {
		t.Fatalf("counts: a sent %d, b received %d, c received %d", a.count("sent", ResultOK), b.count("received", ResultOK), c.count("received", ResultOK))
	}
	if len(a.marks()) != 0 || a.count("received", ResultOK) != 0 {
		t.Fatalf("a heard its own hint: %v", a.marks())
	}

	// c leaves the Service, .4 joins.
	dns.Set("edges.fleet.test.", ip(1), ip(2), ip(4))
	want := []netip.AddrPort{netip.AddrPortFrom(ip(2), port), netip.AddrPortFrom(ip(4), port)}
	waitFor(t, "a's peers to follow the records", func() bool { return slices.Equal(a.Peers(), want) })
	a.Notify("second")
	waitFor(t, "b to mark second", func() bool { return slices.Contains(b.marks(), "second") })
	if slices.Contains(c.marks(), "second") {
		t.Fatal("c, gone from the records, still got a hint")
	}
}

// TestNotifyNeverWaits: while the sender cannot send at all (its peers'
// DNS server never answers, so it has no peer yet), Notify returns at
// once: the queue takes what fits and the rest is dropped and counted.
func TestNotifyNeverWaits(t *testing.T) {
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", silent.LocalAddr().String())
	}}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	peers, _ := ParsePeers([]string{"dns:edges.fleet.test:4875"})
	e := startEdge(t, conn, Options{Peers: peers, Resolver: r, Queue: 8})
	buf := make([]byte, 512)
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := silent.ReadFrom(buf); err != nil {
		t.Fatalf("the resolver did not ask: %v", err)
	}
	// The lookup is now in flight and will not be answered.
	for i := 0; i < 20; i++ {
		e.Notify("left-pad")
	}
	if got := e.count("sent", ResultDropped); got != 12 {
		t.Fatalf("dropped %d, want the 12 over the queue of 8", got)
	}
	if got := e.count("sent", ResultOK); got != 0 {
		t.Fatalf("sent %d with no peer resolved", got)
	}
}

// TestReceiverJudgesDatagrams: what is not a hint is counted and marks
// nothing; a hint from a stranger marks once however often it is sent.
func TestReceiverJudgesDatagrams(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, conn, Options{})
	from, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	to := e.Addr()
	good, _ := AppendHint(nil, "left-pad")
	v2 := slices.Clone(good)
	v2[4] = 2
	for _, d := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), good[:5], append(slices.Clone(good), 0), v2} {
		from.WriteToUDPAddrPort(d, to)
	}
	for i := 0; i < 10; i++ {
		from.WriteToUDPAddrPort(good, to)
	}
	waitFor(t, "14 datagrams judged", func() bool {
		return e.count("received", ResultMalformed) == 3 && e.count("received", ResultVersion) == 1 &&
			e.count("received", ResultOK) == 1 && e.count("received", ResultDuplicate) == 9
	})
	waitFor(t, "the one mark", func() bool { return len(e.marks()) == 1 })
	if got := e.marks(); !slices.Equal(got, []string{"left-pad"}) {
		t.Fatalf("marked %v", got)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
