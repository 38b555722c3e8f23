package conncap

import (
	"net/netip"
	"testing"
)

func TestCapsInTotalAndPerAddress(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")
	n := New(3, 2)
	for i, step := range []struct {
		ip   netip.Addr
		want string
	}{{a, ""}, {a, ""}, {a, PerIP}, {b, ""}, {c, Total}} {
		if got := n.Take(step.ip); got != step.want {
			t.Fatalf("take %d (%v): %q, want %q", i, step.ip, got, step.want)
		}
	}
	n.Release(a)
	if got := n.Take(c); got != "" {
		t.Fatalf("after a release: %q", got)
	}
	if got := n.Take(a); got != Total {
		t.Fatalf("full again: %q", got)
	}
	n.Release(b)
	if len(n.byIP) != 2 {
		t.Fatalf("an address with no place left is still counted: %v", n.byIP)
	}
}

func TestCapsOff(t *testing.T) {
	n := New(0, -1)
	ip := netip.MustParseAddr("192.0.2.1")
	for i := range 1000 {
		if got := n.Take(ip); got != "" {
			t.Fatalf("take %d with the caps off: %q", i, got)
		}
	}
}
