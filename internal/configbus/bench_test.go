package configbus

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
)

// The cost of the bus's userspace judgement per datagram, unsigned against
// signed: what a flood of each costs an agent (docs/benchmarks.md).

// BenchmarkHandleUnsigned: an unkeyed agent applies a valid UPDATE (the same
// value each time) and builds its ACK: the baseline.
func BenchmarkHandleUnsigned(b *testing.B) {
	s, _ := newServer(b, "")
	dg := rows(40)
	b.ReportAllocs()
	for b.Loop() {
		if _, v := s.Handle(dg, client); v != "ok" {
			b.Fatal(v)
		}
	}
}

// BenchmarkHandleSigned: a keyed agent verifies, remembers and applies a
// fresh signed datagram (pre-signed, one per iteration).
func BenchmarkHandleSigned(b *testing.B) {
	clock := testutil.NewClock(t0)
	s, _ := newSignedServer(b, clock, Options{ReplayCapacity: 1 << 20})
	const n = 4096
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = signed(rows(40), t0.Add(time.Duration(i)*time.Millisecond-MaxSkew), busKey)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == n {
			// Every signature is now remembered: start a fresh memory.
			b.StopTimer()
			s.replay = newReplayMemory(1<<20, ReplayWindow)
			i = 0
			b.StartTimer()
		}
		if _, v := s.Handle(pkts[i], client); v != "ok" {
			b.Fatal(v)
		}
		i++
	}
}

// BenchmarkHandleBadSignature: a keyed agent refuses a datagram signed with
// another key (two keys configured, both tried): the cost of a flood of
// forged datagrams that pass XDP.
func BenchmarkHandleBadSignature(b *testing.B) {
	clock := testutil.NewClock(t0)
	s, _ := newSignedServer(b, clock, Options{})
	pkt := signed(rows(40), t0, otherKey)
	b.ReportAllocs()
	for b.Loop() {
		if _, v := s.Handle(pkt, client); v != VerdictSignature {
			b.Fatal(v)
		}
	}
}

// BenchmarkHandleUnsignedRefused: a keyed agent refuses a trailer-less
// datagram (what XDP drops first when attached).
func BenchmarkHandleUnsignedRefused(b *testing.B) {
	clock := testutil.NewClock(t0)
	s, _ := newSignedServer(b, clock, Options{PublicKeys: []ed25519.PublicKey{pub(busKey)}})
	dg := rows(40)
	b.ReportAllocs()
	for b.Loop() {
		if _, v := s.Handle(dg, client); v != VerdictUnsigned {
			b.Fatal(v)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	dg := rows(40)
	tr := codec.Sign(dg, 1, busKey)
	k := pub(busKey)
	b.ReportAllocs()
	for b.Loop() {
		if !tr.Verify(dg, k) {
			b.Fatal("does not verify")
		}
	}
}
