//go:build linux

package loader

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/testutil"
)

// TestBlockListOverVethDropsOnlyTheProxyPort: XDP attached in B, A's
// address on the block list. From A, real sockets: a connection to
// another port of B and a bus datagram go through; the proxy port does
// not answer. `regedge bpf blocklist` (the pins, no agent) lists A and
// unblocks it, and the proxy port answers again.
func TestBlockListOverVethDropsOnlyTheProxyPort(t *testing.T) {
	h := testutil.NewHosts(t)
	fs := testBPFFS(t)
	dp := openIn(t, h, Config{Options: DefaultOptions(), BPFFS: fs, Interfaces: []string{h.IfB}})
	defer dp.Close()
	var proxy, other net.Listener
	testutil.In(t, h.B, func() {
		var err error
		if proxy, err = net.Listen("tcp", "192.0.2.2:4873"); err != nil {
			t.Fatal(err)
		}
		if other, err = net.Listen("tcp", "192.0.2.2:2222"); err != nil {
			t.Fatal(err)
		}
	})
	defer proxy.Close()
	defer other.Close()
	serveHi(proxy, other)
	bus := udpIn(t, h, "B", "192.0.2.2:4874")
	send := udpIn(t, h, "A", "192.0.2.1:0")
	dial := func(addr string) error { return dialHi(t, h, addr) }
	if err := dial("192.0.2.2:4873"); err != nil {
		t.Fatalf("before blocking: %v", err)
	}
	if err := dp.Objects.Block(netip.MustParsePrefix("192.0.2.1/32"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := dial("192.0.2.2:4873"); err == nil {
		t.Fatal("the proxy port answered a blocked source")
	}
	if err := dial("192.0.2.2:2222"); err != nil {
		t.Fatalf("another port from a blocked source: %v", err)
	}
	if _, err := send.WriteToUDP(validDatagram(), &net.UDPAddr{IP: net.ParseIP("192.0.2.2"), Port: 4874}); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, bus, 1, 2*time.Second); len(got) != 1 {
		t.Fatal("a blocked source's bus datagram did not arrive")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(dp.Objects, foldKnown()))
	if err := promtest.GatherAndCompare(reg, strings.NewReader("# HELP regedge_blocklist_entries Sources on the token-failure block list (XDP drops their TCP to the proxy ports), expired entries not counted.\n# TYPE regedge_blocklist_entries gauge\nregedge_blocklist_entries 1\n"), "regedge_blocklist_entries"); err != nil {
		t.Fatal(err)
	}

	// The pins, as the CLI sees them.
	bl, err := OpenPinnedBlockList(fs)
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	list, err := bl.List()
	if err != nil || len(list) != 1 || list[0].Prefix != netip.MustParsePrefix("192.0.2.1/32") || time.Until(list[0].Expires) < 59*time.Minute {
		t.Fatalf("pinned list: %v %v", list, err)
	}
	if err := bl.Unblock(netip.MustParsePrefix("192.0.2.9/32")); !errors.Is(err, ErrNotBlocked) {
		t.Fatalf("unblocking what is not there: %v", err)
	}
	if err := bl.Unblock(netip.MustParsePrefix("192.0.2.1/32")); err != nil {
		t.Fatal(err)
	}
	if err := dial("192.0.2.2:4873"); err != nil {
		t.Fatalf("after unblock: %v", err)
	}
	if _, err := OpenPinnedBlockList(t.TempDir()); !errors.Is(err, ErrNoPins) {
		t.Fatalf("no pins: %v", err)
	}
}

// serveHi answers every connection to each listener with "hi" and closes
// it, until the listener is closed.
func serveHi(lns ...net.Listener) {
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
	}
}

// dialHi connects from namespace A to addr and reads serveHi's answer: nil
// when the connection got through both ways.
func dialHi(t *testing.T, h *testutil.Hosts, addr string) error {
	var err error
	testutil.In(t, h.A, func() {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, 700*time.Millisecond); err == nil {
			buf := make([]byte, 2)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = c.Read(buf)
			c.Close()
		}
	})
	return err
}
