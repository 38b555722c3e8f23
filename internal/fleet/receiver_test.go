package fleet

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var (
	peerIP    = netip.MustParseAddr("192.0.2.2")
	strangeIP = netip.MustParseAddr("198.51.100.1")
	t0        = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
)

// drain returns what is due at now, sorted.
func drain(r *receiver, now time.Time) []string {
	pkgs, _ := r.due(now)
	slices.Sort(pkgs)
	return pkgs
}

// TestForgedBurstMarksOnce: any number of hints for one package from a
// source that is not a peer, within the package's interval, put it in one
// batch: one revalidation.
func TestForgedBurstMarksOnce(t *testing.T) {
	r := newReceiver(Options{})
	counts := map[string]int{}
	for i := 0; i < 100; i++ {
		counts[r.accept(strangeIP, "left-pad", false, t0.Add(time.Duration(i)*time.Millisecond))]++
	}
	if counts[ResultOK] != 1 || counts[ResultDuplicate] != 99 {
		t.Fatalf("results %v, want 1 ok and 99 duplicate", counts)
	}
	if got := drain(r, t0.Add(100*time.Millisecond)); !slices.Equal(got, []string{"left-pad"}) {
		t.Fatalf("due %v", got)
	}
	r.passDone(t0.Add(100*time.Millisecond), 0)
	for _, at := range []time.Duration{time.Second, 2 * time.Second, time.Minute} {
		if got := drain(r, t0.Add(at)); got != nil {
			t.Fatalf("at +%v: due %v, want nothing more", at, got)
		}
	}
	// After the interval, a new hint counts again.
	if res := r.accept(strangeIP, "left-pad", false, t0.Add(2*time.Second)); res != ResultOK {
		t.Fatalf("after the interval: %s", res)
	}
}

// TestPeerWritesInARowMarkTwice: a known peer's second hint within the
// interval (publish, then dist-tag) is kept for the interval's end: the
// second write is seen even when this edge revalidated between the two.
func TestPeerWritesInARowMarkTwice(t *testing.T) {
	r := newReceiver(Options{})
	if res := r.accept(peerIP, "app", true, t0); res != ResultOK {
		t.Fatal(res)
	}
	if got := drain(r, t0); !slices.Equal(got, []string{"app"}) {
		t.Fatalf("due %v", got)
	}
	r.passDone(t0, 0)
	if res := r.accept(peerIP, "app", true, t0.Add(300*time.Millisecond)); res != ResultDeferred {
		t.Fatalf("second hint: %s", res)
	}
	if res := r.accept(peerIP, "app", true, t0.Add(400*time.Millisecond)); res != ResultDuplicate {
		t.Fatalf("third hint: %s, want duplicate (one mark is already kept)", res)
	}
	pkgs, next := r.due(t0.Add(500 * time.Millisecond))
	if pkgs != nil || !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("before the interval's end: %v, next %v", pkgs, next)
	}
	if got := drain(r, t0.Add(time.Second)); !slices.Equal(got, []string{"app"}) {
		t.Fatalf("at the interval's end: due %v", got)
	}
	if got := drain(r, t0.Add(3*time.Second)); got != nil {
		t.Fatalf("later: %v", got)
	}
}

// TestSourceAndGlobalBudgets: one source cannot mark more than its burst
// (then its rate); many sources together not more than the global budget.
func TestSourceAndGlobalBudgets(t *testing.T) {
	r := newReceiver(Options{SourceRate: 10, SourceBurst: 20, GlobalRate: 100, GlobalBurst: 50})
	ok := 0
	for i := 0; i < 100; i++ {
		if r.accept(strangeIP, fmt.Sprintf("pkg-%d", i), false, t0) == ResultOK {
			ok++
		}
	}
	if ok != 20 {
		t.Fatalf("one source, 100 packages at once: %d marked, want its burst 20", ok)
	}
	// One second later the source has earned 10 more.
	ok = 0
	for i := 100; i < 200; i++ {
		if r.accept(strangeIP, fmt.Sprintf("pkg-%d", i), false, t0.Add(time.Second)) == ResultOK {
			ok++
		}
	}
	if ok != 10 {
		t.Fatalf("a second later: %d, want 10", ok)
	}
	// 100 other sources at once: the global budget, refilled to its burst
	// of 50 and 10 of it spent by the round above.
	ok = 0
	for i := 0; i < 100; i++ {
		src := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		if r.accept(src, fmt.Sprintf("other-%d", i), false, t0.Add(time.Second)) == ResultOK {
			ok++
		}
	}
	if ok != 40 {
		t.Fatalf("100 sources at once: %d marked, want the 40 left of the global burst", ok)
	}
}

// TestPassesAreSpaced: after a pass that took d, the next one waits 20 d
// (at least minPassGap); what arrives meanwhile waits for it, in one
// batch.
func TestPassesAreSpaced(t *testing.T) {
	r := newReceiver(Options{})
	r.accept(peerIP, "a", true, t0)
	if got := drain(r, t0); !slices.Equal(got, []string{"a"}) {
		t.Fatal(got)
	}
	r.passDone(t0, 10*time.Millisecond) // a slow pass: a big cache
	r.accept(peerIP, "b", true, t0.Add(time.Millisecond))
	r.accept(peerIP, "c", true, t0.Add(2*time.Millisecond))
	pkgs, next := r.due(t0.Add(100 * time.Millisecond))
	if pkgs != nil || !next.Equal(t0.Add(200*time.Millisecond)) {
		t.Fatalf("during the gap: %v, next %v", pkgs, next)
	}
	if got := drain(r, t0.Add(200*time.Millisecond)); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("after the gap: %v", got)
	}
}

// TestPackageMemoryIsBounded: the receiver never remembers more than
// maxPackages packages; old ones are forgotten to make room.
func TestPackageMemoryIsBounded(t *testing.T) {
	r := newReceiver(Options{SourceRate: 1e9, SourceBurst: 1 << 30, GlobalRate: 1e9, GlobalBurst: 1 << 30})
	for i := 0; i < maxPackages; i++ {
		r.accept(strangeIP, fmt.Sprintf("p%d", i), false, t0)
	}
	if res := r.accept(strangeIP, "one-more", false, t0); res != ResultLimited || len(r.pkgs) != maxPackages {
		t.Fatalf("full, within the interval: %s, %d remembered", res, len(r.pkgs))
	}
	if res := r.accept(strangeIP, "one-more", false, t0.Add(2*time.Second)); res != ResultOK || len(r.pkgs) != 1 {
		t.Fatalf("full, after the interval: %s, %d remembered", res, len(r.pkgs))
	}
}
