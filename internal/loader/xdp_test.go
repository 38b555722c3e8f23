package loader

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/vectors"
)

const (
	xdpDrop = 1
	xdpPass = 2
)

// loadForTest loads the objects with the default options and lets the test
// sources send to the bus.
func loadForTest(t testing.TB) *Objects {
	t.Helper()
	testutil.RequireRoot(t)
	o, err := Load(DefaultOptions())
	if errors.Is(err, os.ErrPermission) || errors.Is(err, ebpf.ErrNotSupported) {
		testutil.SkipOrFail(t, fmt.Sprintf("cannot load BPF programs here: %v", err))
	}
	if err != nil {
		t.Fatal(err) // a verifier rejection is a bug, never a skip
	}
	t.Cleanup(func() { o.Close() })
	if err := o.SetAllow([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")}); err != nil {
		t.Fatal(err)
	}
	return o
}

// notJudged is what runXDP reports when no counter moved: the packet was not
// addressed to the agent and passed untouched.
const notJudged Reason = 0xffff

// runXDP runs one packet through the XDP program and returns the XDP action
// and the reason whose counter moved (notJudged when none did).
func runXDP(t testing.TB, o *Objects, pkt []byte) (uint32, Reason) {
	t.Helper()
	ret, r, _ := runXDPOut(t, o, pkt)
	return ret, r
}

// busPassesSeen remembers, per Objects, the valid bus datagrams counted so
// far (XDP counts them only in the registry counters, whose full read is
// too slow to do twice per packet of the differential fuzzer).
var busPassesSeen sync.Map // *Objects -> uint64

func busPasses(t testing.TB, o *Objects) uint64 {
	t.Helper()
	reg, err := readRegistry(o.xdp.RegistrySlots, o.xdp.RegistryStats)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for k, c := range reg {
		if k.dir == dirBus {
			n += c.Packets
		}
	}
	return n
}

// runXDPOut is runXDP that also returns the frame as XDP left it.
func runXDPOut(t testing.TB, o *Objects, pkt []byte) (uint32, Reason, []byte) {
	t.Helper()
	if _, ok := busPassesSeen.Load(o); !ok {
		busPassesSeen.Store(o, busPasses(t, o))
	}
	before, err := sumStats(o.xdp.XdpStats)
	if err != nil {
		t.Fatal(err)
	}
	ro := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256)}
	ret, err := o.XDP().Run(ro)
	if err != nil {
		t.Fatalf("Program.Run: %v", err)
	}
	after, err := sumStats(o.xdp.XdpStats)
	if err != nil {
		t.Fatal(err)
	}
	if after == before && ret == xdpPass {
		// A pass that moved no per-reason counter: a valid bus datagram
		// (counted in its registry's counters) or not ours at all.
		now := busPasses(t, o)
		prev, _ := busPassesSeen.Swap(o, now)
		if now == prev.(uint64)+1 {
			after[ReasonOK]++
		} else if now != prev.(uint64) {
			t.Fatalf("bus passes moved by %d for one packet", now-prev.(uint64))
		}
	}
	moved := -1
	for i := range after {
		if d := after[i] - before[i]; d != 0 {
			if d != 1 || moved != -1 {
				t.Fatalf("counters moved by more than one packet: before %v after %v", before, after)
			}
			moved = i
		}
	}
	out := ro.DataOut // the frame as the program left it
	if moved < 0 {
		return ret, notJudged, out
	}
	return ret, Reason(moved), out
}

func wantAction(r Reason) uint32 {
	if r == ReasonOK || r == notJudged {
		return xdpPass
	}
	return xdpDrop
}

// TestXDPVectors runs every datagram and frame vector in testdata/, wrapped
// in Ethernet/IPv4/UDP and Ethernet/IPv6/UDP with 0, 1 and 2 VLAN tags: the
// XDP verdict and reason equal the vector's (and so the Go codec's).
func TestXDPVectors(t *testing.T) {
	o := loadForTest(t)
	all, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	type input struct {
		name    string
		payload []byte
		verdict string
	}
	var inputs []input
	for _, v := range all.Datagrams {
		inputs = append(inputs, input{"datagram/" + v.Name, v.Bytes(), v.Verdict})
	}
	for _, v := range all.SignedDatagrams {
		b, _ := hex.DecodeString(v.Hex)
		inputs = append(inputs, input{"signed/" + v.Name, b, "ok"})
	}
	// Every frame vector behind the default state, as a datagram.
	def := codec.DefaultState()
	for _, v := range all.Frames {
		inputs = append(inputs, input{"frame/" + v.Name, append(def.Append(nil), v.Bytes()...), v.Verdict})
	}
	// Every state vector as a sender, with a valid frame.
	upd := codec.Update(codec.FieldTerminalMode, 2)
	for _, v := range all.States {
		want := v.Verdict
		if want == "ok" && v.Bytes()[0] != 1 {
			want = "version" // the kernel accepts only version 1 by default
		}
		inputs = append(inputs, input{"state/" + v.Name, upd.Append(v.Bytes()), want})
	}
	for _, in := range inputs {
		for _, v6 := range []bool{false, true} {
			for vlans := 0; vlans <= 2; vlans++ {
				name := fmt.Sprintf("%s/v6=%v/vlans=%d", in.name, v6, vlans)
				ret, reason := runXDP(t, o, busPacket(v6, vlans, in.payload))
				// Frames shorter than a datagram: the datagram verdict is length.
				want := in.verdict
				if len(in.payload) < codec.MinDatagramSize {
					want = "length"
				}
				if reason.String() != want || ret != wantAction(reason) {
					t.Errorf("%s: action %d reason %s, want %s", name, ret, reason, want)
				}
				if goReason := codec.CheckDatagram(in.payload, &codec.DefaultVersions); goReason.String() != reason.String() {
					t.Errorf("%s: kernel %s, codec %s", name, reason, goReason)
				}
			}
		}
	}
}

// TestXDPDifferentialFuzz sends random and mutated datagrams through XDP and
// the codec; every disagreement is written out as a vector and fails the test.
// REGEDGE_KERNEL_FUZZ sets the count (default 100000; make fuzz-kernel runs more).
func TestXDPDifferentialFuzz(t *testing.T) {
	o := loadForTest(t)
	n := 100000
	if s := os.Getenv("REGEDGE_KERNEL_FUZZ"); s != "" {
		if _, err := fmt.Sscan(s, &n); err != nil {
			t.Fatalf("REGEDGE_KERNEL_FUZZ=%q: %v", s, err)
		}
	}
	if testing.Short() {
		n = 5000
	}
	all, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	seed := rand.Uint64()
	t.Logf("seed %d, %d inputs", seed, n)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var seeds [][]byte
	for _, v := range all.Datagrams {
		seeds = append(seeds, v.Bytes())
	}
	def := codec.DefaultState()
	for _, v := range all.Frames {
		seeds = append(seeds, append(def.Append(nil), v.Bytes()...))
	}
	// Each seed also with a trailer (random bytes: the kernel judges its
	// length, never its content), and the signed vectors as they are.
	for _, b := range seeds[:len(seeds):len(seeds)] {
		seeds = append(seeds, append(append([]byte(nil), b...), noise(rng, codec.TrailerSize)...))
	}
	for _, v := range all.SignedDatagrams {
		b, _ := hex.DecodeString(v.Hex)
		seeds = append(seeds, b)
	}

	versions := codec.NewVersionSet(1, 2)
	if err := o.SetVersions(versions); err != nil {
		t.Fatal(err)
	}
	var seen [NumReasons]int
	signedOK := 0
	var disagreements []vectors.Vector
	// The second half runs with a trailer required: the kernel then also
	// drops valid datagrams without one, as unsigned. In the first and third
	// quarters the destinations (127.0.0.1, ::1) are on the local list, as
	// the agent's address watcher puts them: a drop is known to be ours
	// without the FIB; in the others the FIB says so.
	local := []netip.Addr{testDst4, testDst6}
	for i := 0; i < n && len(disagreements) < 20; i++ {
		requireSigned := i >= n/2
		if i == n/2 {
			if err := o.SetRequireSigned(true); err != nil {
				t.Fatal(err)
			}
		}
		if quarter := max(n/4, 1); i%quarter == 0 {
			list := local
			if (i/quarter)%2 == 1 {
				list = nil
			}
			if err := o.SetLocalAddrs(list); err != nil {
				t.Fatal(err)
			}
		}
		payload := mutate(rng, seeds[rng.IntN(len(seeds))])
		want := codec.CheckDatagram(payload, &versions).String()
		_, trailer, _ := codec.SplitSigned(payload)
		if want == "ok" && trailer != nil {
			signedOK++
		}
		if want == "ok" && trailer == nil && requireSigned {
			want = ReasonUnsigned.String()
		}
		ret, got := runXDP(t, o, busPacket(i%2 == 1, i%3, payload))
		if got < NumReasons {
			seen[got]++
		}
		if verdictWord(got) != want || ret != wantAction(got) {
			disagreements = append(disagreements, vectors.Vector{
				Name: fmt.Sprintf("kernel fuzz %d (trailer required: %v): kernel %s", i, requireSigned, verdictWord(got)), Hex: hex.EncodeToString(payload), Verdict: want,
			})
		}
	}
	t.Logf("verdicts: %v, valid with a trailer: %d", seen, signedOK)
	if n >= 10000 {
		for r := ReasonOK; r <= ReasonVersion; r++ {
			if seen[r] == 0 {
				t.Errorf("no input reached verdict %s: the generator needs work", r)
			}
		}
		if seen[ReasonUnsigned] == 0 || signedOK == 0 {
			t.Errorf("unsigned drops %d, valid signed datagrams %d: the generator needs work", seen[ReasonUnsigned], signedOK)
		}
	}
	if len(disagreements) > 0 {
		path := filepath.Join(t.TempDir(), "kernel-disagreements.json")
		if dir := os.Getenv("REGEDGE_DISAGREEMENTS_DIR"); dir != "" {
			path = filepath.Join(dir, "kernel-disagreements.json")
		}
		b, _ := json.MarshalIndent(map[string]any{"datagrams": disagreements}, "", " ")
		_ = os.WriteFile(path, b, 0o644)
		for _, d := range disagreements {
			t.Errorf("%s: %s, codec says %s", d.Name, d.Hex, d.Verdict)
		}
		t.Fatalf("%d disagreements written to %s", len(disagreements), path)
	}
}

func noise(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// mutate returns a variant of seed: bit flips, byte writes, truncation,
// extension (by a trailer, or by one byte more or less than one), a fixed
// checksum (so later checks are reached), or noise.
func mutate(rng *rand.Rand, seed []byte) []byte {
	b := append([]byte(nil), seed...)
	switch rng.IntN(12) {
	case 0: // pure noise of any length up to past the largest signed datagram
		return noise(rng, rng.IntN(codec.MaxSignedDatagramSize+16))
	case 1: // truncate
		if len(b) > 0 {
			b = b[:rng.IntN(len(b))]
		}
		return b
	case 2: // extend
		return append(b, noise(rng, rng.IntN(40))...)
	case 3: // a trailer, or one byte short or long of one
		return append(b, noise(rng, codec.TrailerSize-1+rng.IntN(3))...)
	}
	for k := 1 + rng.IntN(3); k > 0 && len(b) > 0; k-- {
		i := rng.IntN(len(b))
		if rng.IntN(2) == 0 {
			b[i] ^= 1 << rng.IntN(8)
		} else {
			b[i] = byte(rng.Uint32())
		}
	}
	// Most of the time repair the checksum so field and value checks are
	// hit: the frame's last byte, before the trailer when there is one.
	if rng.IntN(4) != 0 && len(b) > codec.StateSize+1 {
		end := len(b)
		if dg, _, ok := codec.SplitSigned(b); ok {
			end = len(dg)
		}
		var x byte
		for _, c := range b[codec.StateSize : end-1] {
			x ^= c
		}
		b[end-1] = x
	}
	return b
}

// TestXDPRequireSigned: with a trailer required, every datagram vector gets
// the codec's verdict, except that valid ones without a trailer become
// unsigned; signed ones pass. Turned off again, unsigned ones pass.
func TestXDPRequireSigned(t *testing.T) {
	o := loadForTest(t)
	all, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{}
	for _, v := range all.Datagrams {
		inputs["datagram/"+v.Name] = v.Bytes()
	}
	for _, v := range all.SignedDatagrams {
		b, _ := hex.DecodeString(v.Hex)
		inputs["signed/"+v.Name] = b
	}
	for _, require := range []bool{true, false} {
		if err := o.SetRequireSigned(require); err != nil {
			t.Fatal(err)
		}
		unsigned, signed := 0, 0
		for name, b := range inputs {
			want := codec.CheckDatagram(b, &codec.DefaultVersions).String()
			if want == "ok" {
				if _, tr, _ := codec.SplitSigned(b); tr == nil && require {
					want = ReasonUnsigned.String()
					unsigned++
				} else if tr != nil {
					signed++
				}
			}
			for _, v6 := range []bool{false, true} {
				ret, got := runXDP(t, o, busPacket(v6, 0, b))
				if got.String() != want || ret != wantAction(got) {
					t.Errorf("required=%v %s (v6=%v): action %d reason %s, want %s", require, name, v6, ret, got, want)
				}
			}
		}
		if signed == 0 || (require && unsigned == 0) {
			t.Fatalf("required=%v: %d signed and %d unsigned valid vectors: the test tests nothing", require, signed, unsigned)
		}
	}
}
