package configbus

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/testutil"
)

var (
	busKey   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x11}, ed25519.SeedSize))
	busKey2  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x22}, ed25519.SeedSize))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x33}, ed25519.SeedSize))
	// t0 is the agent's clock in these tests: 2026-01-01T00:00:00Z.
	t0 = time.UnixMilli(1767225600000)
)

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func newSignedServer(t testing.TB, clock *testutil.Clock, opts Options) (*Server, *state.Store) {
	t.Helper()
	st, err := state.Open(state.Options{Initial: codec.DefaultState()})
	if err != nil {
		t.Fatal(err)
	}
	opts.Allow = loopback
	if opts.PublicKeys == nil {
		opts.PublicKeys = []ed25519.PublicKey{pub(busKey), pub(busKey2)}
	}
	opts.Now = clock.Now
	return NewServer(nil, st, opts, quiet), st
}

func datagram(f codec.Frame) []byte { return codec.AppendDatagram(nil, codec.DefaultState(), &f) }

func signed(dg []byte, at time.Time, key ed25519.PrivateKey) []byte {
	return codec.AppendSigned(nil, dg, uint64(at.UnixMilli()), key)
}

func rows(n uint64) []byte { return datagram(codec.Update(codec.FieldRows, n)) }

// TestSignedVerdicts: with keys, each verdict of §3.1a in turn; none of the
// refused datagrams changes the state or gets an answer.
func TestSignedVerdicts(t *testing.T) {
	clock := testutil.NewClock(t0)
	s, st := newSignedServer(t, clock, Options{})
	badSig := signed(rows(44), t0, busKey)
	badSig[len(badSig)-1] ^= 1
	badStamp := signed(rows(45), t0, busKey)
	badStamp[len(rows(45))+7] ^= 1 // still fresh (1 ms), no longer signed
	badBody := signed(rows(46), t0, busKey)
	badBody[10] ^= 1 // rows of the sender state: still valid, no longer signed
	for _, c := range []struct {
		name    string
		b       []byte
		verdict string
	}{
		{"unsigned", rows(30), VerdictUnsigned},
		{"unsigned heartbeat", datagram(codec.Heartbeat(1)), VerdictUnsigned},
		{"31 s old", signed(rows(31), t0.Add(-MaxSkew-time.Millisecond), busKey), VerdictStale},
		{"31 s ahead", signed(rows(32), t0.Add(MaxSkew+time.Millisecond), busKey), VerdictStale},
		{"timestamp 0", signed(rows(33), time.UnixMilli(0), busKey), VerdictStale},
		{"another key", signed(rows(34), t0, otherKey), VerdictSignature},
		{"signature bit flipped", badSig, VerdictSignature},
		{"timestamp bit flipped", badStamp, VerdictSignature},
		{"datagram byte changed", badBody, VerdictSignature},
		{"stale and badly signed: stale first", signed(rows(35), t0.Add(-time.Hour), otherKey), VerdictStale},
		{"71-byte trailer", signed(rows(36), t0, busKey)[:27+71], "length"},
		{"73-byte trailer", append(signed(rows(37), t0, busKey), 0), "length"},
		{"unsigned bad checksum: codec first", badChecksum(rows(38)), "checksum"},
	} {
		reply, verdict := s.Handle(c.b, client)
		if verdict != c.verdict || reply != nil || st.State() != codec.DefaultState() {
			t.Errorf("%s: verdict %s (want %s), reply %x, state %v", c.name, verdict, c.verdict, reply, st.State())
		}
	}

	// Signed, fresh, new: applied and answered, with either key and at the
	// edges of the window.
	for i, c := range []struct {
		at  time.Time
		key ed25519.PrivateKey
	}{{t0, busKey}, {t0, busKey2}, {t0.Add(-MaxSkew), busKey}, {t0.Add(MaxSkew), busKey}} {
		want := uint64(50 + i)
		b := signed(rows(want), c.at, c.key)
		reply, verdict := s.Handle(b, client)
		if verdict != "ok" || st.State().Rows != uint8(want) {
			t.Fatalf("signed %d: verdict %s state %v", i, verdict, st.State())
		}
		if d := decodeReply(t, reply); d.Frame.Type != codec.TypeAck || d.Sender != st.State() {
			t.Fatalf("signed %d: reply %+v", i, d)
		}
		// The same bytes again: a replay, refused in silence.
		st.Set(codec.DefaultState(), state.SourceCLI)
		reply, verdict = s.Handle(b, client)
		if verdict != VerdictReplay || reply != nil || st.State() != codec.DefaultState() {
			t.Fatalf("replay %d: verdict %s reply %x state %v", i, verdict, reply, st.State())
		}
	}

	// A signed heartbeat is answered; a signed version change is refused
	// with an answer (the sender is authentic).
	reply, verdict := s.Handle(signed(datagram(codec.Heartbeat(1)), t0, busKey), client)
	if d := decodeReply(t, reply); verdict != "ok" || d.Frame.Type != codec.TypeHeartbeat {
		t.Fatalf("signed heartbeat: %s %+v", verdict, d.Frame)
	}
	reply, verdict = s.Handle(signed(datagram(codec.Update(codec.FieldVersion, 2)), t0, busKey), client)
	if d := decodeReply(t, reply); verdict != VerdictNotAllowed || codec.ErrorCode(d.Frame.Field) != codec.ErrCodeNotAllowed {
		t.Fatalf("signed version change: %s %+v", verdict, d.Frame)
	}

	// An invalid datagram is answered with ERROR only when its trailer
	// holds: a sender with the key hears why, anyone else hears nothing.
	bad := badChecksum(rows(60))
	reply, verdict = s.Handle(signed(bad, t0, busKey), client)
	if d := decodeReply(t, reply); verdict != "checksum" || codec.ErrorCode(d.Frame.Field) != codec.ErrCodeBadChecksum {
		t.Fatalf("signed, bad checksum: %s %+v", verdict, d.Frame)
	}
	for name, b := range map[string][]byte{
		"another key": signed(bad, t0, otherKey), "stale": signed(bad, t0.Add(-time.Minute), busKey),
	} {
		if reply, verdict = s.Handle(b, client); verdict != "checksum" || reply != nil {
			t.Fatalf("bad checksum, %s: %s, reply %x", name, verdict, reply)
		}
	}
	if st.State() != codec.DefaultState() {
		t.Fatalf("state changed: %v", st.State())
	}
}

func badChecksum(dg []byte) []byte {
	b := append([]byte(nil), dg...)
	b[len(b)-1] ^= 0xff
	return b
}

// TestReplayMemoryExpiresAndIsBounded: a signature is refused again for
// ReplayWindow after it was accepted, and the memory never holds more than
// its capacity: when it is full of live signatures, new ones are refused.
func TestReplayMemoryExpiresAndIsBounded(t *testing.T) {
	m := newReplayMemory(3, ReplayWindow)
	sig := func(b byte) *[ed25519.SignatureSize]byte {
		var s [ed25519.SignatureSize]byte
		s[0], s[63] = b, b
		return &s
	}
	if m.admit(sig(1), t0) != admitNew || m.admit(sig(1), t0.Add(ReplayWindow-time.Millisecond)) != admitSeen {
		t.Fatal("a signature within the window was not refused")
	}
	if m.admit(sig(2), t0.Add(time.Second)) != admitNew || m.admit(sig(3), t0.Add(2*time.Second)) != admitNew {
		t.Fatal("new signatures refused")
	}
	if r := m.admit(sig(4), t0.Add(3*time.Second)); r != admitFull || m.len() != 3 {
		t.Fatalf("fourth signature in a memory of three: %v, %d remembered", r, m.len())
	}
	// sig 1 expires at t0+window: then there is room, and sig 1 is new again.
	if r := m.admit(sig(4), t0.Add(ReplayWindow)); r != admitNew || m.len() != 3 {
		t.Fatalf("after the first expired: %v, %d remembered", r, m.len())
	}
	if r := m.admit(sig(1), t0.Add(ReplayWindow)); r != admitFull {
		t.Fatalf("sig 1 after its window with a full memory: %v", r)
	}
	if r := m.admit(sig(1), t0.Add(ReplayWindow+2*time.Second)); r != admitNew || m.len() != 2 {
		t.Fatalf("sig 1 once sigs 2 and 3 expired: %v, %d remembered", r, m.len())
	}
	// Many signatures over a long time: never more than the capacity.
	at := t0
	for i := 0; i < 1000; i++ {
		at = at.Add(7 * time.Second)
		m.admit(sig(byte(i)), at)
		if m.len() > 3 || len(m.seen) != m.len() {
			t.Fatalf("step %d: %d in the ring, %d in the set", i, m.len(), len(m.seen))
		}
	}
}

// TestSignedReplayCapacity: through the server, a full replay memory
// refuses signed datagrams as replay until its entries expire.
func TestSignedReplayCapacity(t *testing.T) {
	clock := testutil.NewClock(t0)
	s, st := newSignedServer(t, clock, Options{ReplayCapacity: 2})
	for i, want := range []string{"ok", "ok", VerdictReplay} {
		if _, verdict := s.Handle(signed(rows(uint64(70+i)), clock.Now(), busKey), client); verdict != want {
			t.Fatalf("datagram %d: %s, want %s", i, verdict, want)
		}
	}
	if st.State().Rows != 71 {
		t.Fatalf("rows %d: the refused datagram was applied", st.State().Rows)
	}
	clock.Advance(ReplayWindow)
	if _, verdict := s.Handle(signed(rows(80), clock.Now(), busKey), client); verdict != "ok" || st.State().Rows != 80 {
		t.Fatalf("after the window: %s rows %d", verdict, st.State().Rows)
	}
}

// TestUnkeyedIgnoresTrailer: without keys a signed datagram is judged as an
// unsigned one (any signature, any timestamp) and the trailer is counted.
func TestUnkeyedIgnoresTrailer(t *testing.T) {
	s, st := newServer(t, "")
	b := signed(rows(40), time.UnixMilli(5), otherKey)
	if reply, verdict := s.Handle(b, client); verdict != "ok" || st.State().Rows != 40 || decodeReply(t, reply).Frame.Type != codec.TypeAck {
		t.Fatalf("verdict %s state %v", verdict, st.State())
	}
	if got := promtest.ToFloat64(s.ignored); got != 1 {
		t.Fatalf("regedge_bus_trailers_ignored_total = %v, want 1", got)
	}
	// A wrong-size trailer is still length, and answered (no keys: §3.1).
	reply, verdict := s.Handle(append(b, 0), client)
	if verdict != "length" || decodeReply(t, reply).Frame.Type != codec.TypeError {
		t.Fatalf("73-byte trailer: %s", verdict)
	}
}

// TestSignedServeSilence: over a real socket, refused datagrams get no
// answer (the next answer the sender reads is the one to its signed
// heartbeat, sent after them) and each is counted under its verdict.
func TestSignedServeSilence(t *testing.T) {
	addr, st, srv := startServerWith(t, "", Options{Allow: loopback, PublicKeys: []ed25519.PublicKey{pub(busKey)}})
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	to := netip.MustParseAddrPort(addr)
	accepted := signed(rows(41), time.Now(), busKey)
	for _, b := range [][]byte{
		rows(40), // unsigned
		signed(rows(40), time.Now().Add(-time.Hour), busKey), // stale
		signed(rows(40), time.Now(), otherKey),               // signature
		accepted, accepted,                                   // ok, then replay
		signed(datagram(codec.Heartbeat(1)), time.Now(), busKey),
	} {
		if _, err := conn.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	var types []codec.FrameType
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(types) < 2 {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %v: %v", types, err)
		}
		types = append(types, decodeReply(t, buf[:n]).Frame.Type)
	}
	if types[0] != codec.TypeAck || types[1] != codec.TypeHeartbeat || st.State().Rows != 41 {
		t.Fatalf("answers %v, rows %d: want ACK (the accepted push), then HEARTBEAT, nothing else", types, st.State().Rows)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(srv.Collectors()...)
	want := map[string]float64{"ok": 2, VerdictUnsigned: 1, VerdictStale: 1, VerdictSignature: 1, VerdictReplay: 1}
	for v, n := range want {
		if got := promtest.ToFloat64(srv.verdicts.WithLabelValues(v)); got != n {
			t.Errorf("regedge_bus_datagrams_total{verdict=%q} = %v, want %v", v, got, n)
		}
	}
	if n, err := promtest.GatherAndCount(reg, "regedge_bus_datagrams_total"); err != nil || n != int(codec.NumReasons)+7 {
		t.Errorf("%d verdict series (%v), want every reason and the seven bus verdicts", n, err)
	}
}

// TestPushSigned: a push with the key converges on a keyed agent; without
// it, the agent stays silent and the push reports no answer.
func TestPushSigned(t *testing.T) {
	addr, st, _ := startServerWith(t, "", Options{Allow: loopback, PublicKeys: []ed25519.PublicKey{pub(busKey)}})
	entries := []codec.Entry{{Field: codec.FieldRows, Value: 40}, {Field: codec.FieldCols, Value: 120}}
	res, err := Push(context.Background(), []string{addr}, PushOptions{
		Sender: codec.DefaultState(), Entries: entries, Deadline: 300 * time.Millisecond, Retry: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Converged || res[0].HasReport || !strings.Contains(res[0].Err, "no answer") || st.State().Rows != 24 {
		t.Fatalf("unsigned push: %+v, state %v", res[0], st.State())
	}
	res, err = Push(context.Background(), []string{addr}, PushOptions{Sender: codec.DefaultState(), Entries: entries, Key: busKey})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Converged || st.State().Rows != 40 || st.State().Cols != 120 {
		t.Fatalf("signed push: %+v, state %v", res[0], st.State())
	}
	if _, err := Push(context.Background(), []string{addr}, PushOptions{Sender: codec.DefaultState(), Entries: entries, Key: busKey[:32]}); err == nil {
		t.Fatal("a 32-byte signing key was used")
	}
}

// TestPushSignsEachAttempt: every retry carries a fresh timestamp and its
// own valid signature, so no retry is ever a replay of the one before.
func TestPushSignsEachAttempt(t *testing.T) {
	target, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	clock := testutil.NewClock(t0)
	tick := func() time.Time { clock.Advance(1500 * time.Millisecond); return clock.Now() }
	done := make(chan []Result, 1)
	go func() {
		res, _ := Push(context.Background(), []string{target.LocalAddr().String()}, PushOptions{
			Sender: codec.DefaultState(), Entries: []codec.Entry{{Field: codec.FieldRows, Value: 40}},
			Key: busKey, Now: tick, Deadline: 5 * time.Second, Retry: 20 * time.Millisecond, MaxRetry: 20 * time.Millisecond,
		})
		done <- res
	}()
	buf := make([]byte, 2048)
	var stamps []uint64
	var from netip.AddrPort
	target.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(stamps) < 3 {
		n, f, err := target.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		from = f
		dg, tr, ok := codec.SplitSigned(buf[:n])
		if !ok || tr == nil {
			t.Fatalf("attempt %d: %x is not signed", len(stamps)+1, buf[:n])
		}
		trailer, _ := codec.ParseTrailer(tr)
		if !trailer.Verify(dg, pub(busKey)) {
			t.Fatalf("attempt %d does not verify", len(stamps)+1)
		}
		stamps = append(stamps, trailer.Timestamp)
	}
	if stamps[0] == stamps[1] || stamps[1] == stamps[2] || stamps[0] < uint64(t0.UnixMilli()) {
		t.Fatalf("timestamps %v: want a fresh one per attempt", stamps)
	}
	// Answer the last attempt so the push ends now.
	reported := codec.DefaultState()
	reported.Rows = 40
	ack := codec.Ack(codec.TypeBulk)
	if _, err := target.WriteToUDPAddrPort(codec.AppendDatagram(nil, reported, &ack), from); err != nil {
		t.Fatal(err)
	}
	if res := <-done; !res[0].Converged || res[0].Attempts < 3 {
		t.Fatalf("push: %+v", res[0])
	}
}

// FuzzHandleSigned: with keys, no input changes the state or gets an
// answer unless its trailer verifies with a configured key and is fresh.
func FuzzHandleSigned(f *testing.F) {
	f.Add(signed(rows(40), t0, busKey))
	f.Add(signed(datagram(codec.Heartbeat(7)), t0, busKey2))
	f.Add(signed(badChecksum(rows(41)), t0, busKey))
	f.Add(rows(42))
	clock := testutil.NewClock(t0)
	s, st := newSignedServer(f, clock, Options{})
	f.Fuzz(func(t *testing.T, b []byte) {
		before := st.State()
		reply, verdict := s.Handle(b, client)
		authentic := false
		if dg, tr, ok := codec.SplitSigned(b); ok && tr != nil {
			trailer, _ := codec.ParseTrailer(tr)
			authentic = trailer.Within(t0, MaxSkew) && (trailer.Verify(dg, pub(busKey)) || trailer.Verify(dg, pub(busKey2)))
		}
		if !authentic && (st.State() != before || reply != nil) {
			t.Fatalf("%x (verdict %s) is not signed but changed the state or was answered", b, verdict)
		}
		if verdict == "" {
			t.Fatal("no verdict")
		}
		st.Set(codec.DefaultState(), state.SourceCLI)
	})
}
