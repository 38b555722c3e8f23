package fleet

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/testutil"
)

func TestParsePeer(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"10.0.0.7:4875", "10.0.0.7:4875"},
		{"[2001:db8::7]:4875", "[2001:db8::7]:4875"},
		{"[::ffff:10.0.0.7]:4875", "10.0.0.7:4875"},
		{"dns:regedge-fleet.regedge.svc.cluster.local:4875", "dns:regedge-fleet.regedge.svc.cluster.local:4875"},
		{"dns:edges.example.:4875", "dns:edges.example:4875"},
		{"dns:localhost:1", "dns:localhost:1"},
	} {
		p, err := ParsePeer(c.in)
		if err != nil || p.String() != c.want {
			t.Errorf("%q: %v %v, want %s", c.in, p, err, c.want)
		}
	}
	for _, c := range []struct{ in, says string }{
		{"10.0.0.7", "want IP:PORT"},
		{"edges.example:4875", "dns:NAME:PORT"},
		{"10.0.0.7:0", "port 1..65535"},
		{"0.0.0.0:4875", "unicast"},
		{"[ff02::1]:4875", "unicast"},
		{"[fe80::1%eth0]:4875", "unicast"},
		{"10.0.0.7:65536", "want IP:PORT"},
		{"dns:edges.example", "want dns:NAME:PORT"},
		{"dns:edges.example:", "port"},
		{"dns:edges.example:0", "port"},
		{"dns::4875", "DNS name"},
		{"dns:edges..example:4875", "label"},
		{"dns:-edges.example:4875", "label"},
		{"dns:edges example:4875", "not allowed"},
		{"dns:" + strings.Repeat("a", 64) + ".example:4875", "label"},
		{"dns:10.0.0.7:4875", "without the dns prefix"},
		{"", "want IP:PORT"},
	} {
		p, err := ParsePeer(c.in)
		if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), c.in) {
			t.Errorf("%q: %v %v, want an error naming it and saying %q", c.in, p, err, c.says)
		}
	}
	if _, err := ParsePeers([]string{"10.0.0.1:4875", "nope"}); err == nil || !strings.HasPrefix(err.Error(), "[1]: ") {
		t.Errorf("ParsePeers: %v, want the index of the bad entry", err)
	}
}

func TestParseListen(t *testing.T) {
	for _, c := range []struct{ in, want, network string }{
		{"0.0.0.0:4875", "0.0.0.0:4875", "udp"},
		{"[::]:4875", "[::]:4875", "udp"},
		{"10.0.0.7:4875", "10.0.0.7:4875", "udp4"},
		{"[2001:db8::7]:0", "[2001:db8::7]:0", "udp6"},
	} {
		ap, err := ParseListen(c.in)
		if err != nil || ap.String() != c.want || ListenNetwork(ap.Addr()) != c.network {
			t.Errorf("%q: %v %v %s", c.in, ap, err, ListenNetwork(ap.Addr()))
		}
	}
	for _, in := range []string{"4875", "localhost:4875", "0.0.0.0:x", "0.0.0.0:70000", ""} {
		if _, err := ParseListen(in); err == nil || !strings.Contains(err.Error(), in) {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestSelf(t *testing.T) {
	ap := netip.MustParseAddrPort
	local := []netip.Addr{netip.MustParseAddr("192.0.2.6"), netip.MustParseAddr("2001:db8::6")}
	any := Self{Bound: ap("[::]:4875"), Local: local}
	one := Self{Bound: ap("192.0.2.6:4875"), Local: local}
	for _, c := range []struct {
		self Self
		peer string
		want bool
	}{
		{any, "192.0.2.6:4875", true},
		{any, "[2001:db8::6]:4875", true},
		{any, "[::ffff:192.0.2.6]:4875", true},
		{any, "127.0.0.1:4875", true},
		{any, "192.0.2.6:4876", false}, // another agent's port on this host
		{any, "192.0.2.10:4875", false},
		{one, "192.0.2.6:4875", true},
		{one, "127.0.0.1:4875", false}, // bound to one address: loopback is not this socket
		{one, "[2001:db8::6]:4875", false},
		{Self{}, "192.0.2.6:4875", false},
	} {
		if got := c.self.Is(ap(c.peer)); got != c.want {
			t.Errorf("%v is %s: %v, want %v", c.self.Bound, c.peer, got, c.want)
		}
	}
}

// TestResolveEveryRecord: a dns: peer is every A and AAAA record of its
// name, on its port; a lookup that fails keeps the name's last addresses
// until it answers again; an answer that changed replaces them.
func TestResolveEveryRecord(t *testing.T) {
	dns := testutil.NewDNSServer(t)
	a := netip.MustParseAddr
	dns.Set("edges.fleet.test.", a("192.0.2.2"), a("192.0.2.6"), a("2001:db8::a"))
	peers, err := ParsePeers([]string{"dns:edges.fleet.test:4875", "198.51.100.9:4999", "dns:edges.fleet.test:4875"})
	if err != nil {
		t.Fatal(err)
	}
	r := dns.Resolver()
	got, names, err := Resolve(context.Background(), r, peers, nil)
	want := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.2:4875"), netip.MustParseAddrPort("192.0.2.6:4875"),
		netip.MustParseAddrPort("198.51.100.9:4999"), netip.MustParseAddrPort("[2001:db8::a]:4875"),
	}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("resolve: %v %v, want %v", got, err, want)
	}

	dns.SetFail(true)
	again, names2, err := Resolve(context.Background(), r, peers, names)
	if err == nil || !strings.Contains(err.Error(), "dns:edges.fleet.test:4875") || !slices.Equal(again, want) {
		t.Fatalf("failed lookup: %v %v; want the last addresses kept and the error naming the entry", again, err)
	}
	dns.SetFail(false)
	dns.Set("edges.fleet.test.", a("192.0.2.10"))
	got, _, err = Resolve(context.Background(), r, peers, names2)
	if err != nil || !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:4875"), netip.MustParseAddrPort("198.51.100.9:4999")}) {
		t.Fatalf("after the change: %v %v", got, err)
	}
}
