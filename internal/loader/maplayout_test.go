//go:build linux

package loader

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
)

// TestOnlyIncompatibleMapIsReplaced: the pins of a first agent hold a block
// list entry, the allow-list and counters; one pinned map (block_v6) is then
// swapped for one of another layout (a smaller max_entries, as a build with
// another size would have pinned), holding an entry of its own. The next Open
// replaces that map alone, with a fresh one of this build's layout, says so
// naming it, and every other map keeps its contents. (The loader used to
// remove every map pin on the first incompatible one.)
func TestOnlyIncompatibleMapIsReplaced(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := testBPFFS(t)
	allow := netip.MustParsePrefix("192.0.2.0/24")
	cfg := Config{Options: DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB},
		Settings: &Settings{Versions: codec.DefaultVersions, Allow: []netip.Prefix{allow}}}
	dp1 := openRaw(t, h, cfg)
	defer detachIn(t, h, bpffs)
	knowRegistries(t, dp1.Objects, codec.DefaultState().RegistryHash)
	blocked := netip.PrefixFrom(testSrc4, 32) // tcpPacket's source
	if err := dp1.Block(blocked, time.Hour); err != nil {
		t.Fatal(err)
	}
	bad := validDatagram()
	bad[len(bad)-1] ^= 1
	if _, r := runXDP(t, dp1.Objects, busPacket(false, 0, bad)); r != ReasonChecksum {
		t.Fatalf("a corrupted datagram: %s", verdictWord(r))
	}
	if _, r := runXDP(t, dp1.Objects, busPacket(false, 0, validDatagram())); r != ReasonOK {
		t.Fatalf("a valid datagram: %s", verdictWord(r))
	}
	countersBefore, err := dp1.Counters()
	if err != nil {
		t.Fatal(err)
	}
	registryBefore, err := dp1.RegistryCounters()
	if err != nil || len(registryBefore) == 0 {
		t.Fatalf("registry counters after a valid datagram: %v, %v", registryBefore, err)
	}
	dp1.Close()

	// Another build's block_v6: same name, type and key, 16 entries.
	maps := filepath.Join(PinRoot(bpffs), LayoutVersion, "maps")
	spec, err := loadXdp()
	if err != nil {
		t.Fatal(err)
	}
	other := spec.Maps[xdpMapBlockV6].Copy()
	other.MaxEntries, other.Pinning = 16, ebpf.PinNone
	impostor, err := ebpf.NewMap(other)
	if err != nil {
		t.Fatal(err)
	}
	defer impostor.Close()
	if err := impostor.Put(lpmKey6(netip.MustParsePrefix("2001:db8:bad::/48")), &xdpBlockEntry{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(maps, xdpMapBlockV6)); err != nil {
		t.Fatal(err)
	}
	if err := impostor.Pin(filepath.Join(maps, xdpMapBlockV6)); err != nil {
		t.Fatal(err)
	}

	dp2 := openRaw(t, h, cfg)
	defer dp2.Close()
	notes := strings.Join(dp2.Notes, "\n")
	if !strings.Contains(notes, "map "+xdpMapBlockV6+": ") || !strings.Contains(notes, "MaxEntries: 16 changed to") {
		t.Errorf("no note naming the replaced %s and what changed; notes:\n%s", xdpMapBlockV6, notes)
	}
	if n := strings.Count(notes, "replaced it"); n != 1 {
		t.Errorf("%d maps said replaced, want 1; notes:\n%s", n, notes)
	}

	// The replaced map: this build's layout, empty, and the one pinned.
	if err := spec.Maps[xdpMapBlockV6].Compatible(dp2.xdp.BlockV6); err != nil {
		t.Errorf("the new %s: %v", xdpMapBlockV6, err)
	}
	if keys, err := mapKeys[xdpLpmV6](dp2.xdp.BlockV6); err != nil || len(keys) != 0 {
		t.Errorf("the new %s holds %v (%v), want nothing", xdpMapBlockV6, keys, err)
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(maps, xdpMapBlockV6), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if info, err := pinned.Info(); err != nil || info.MaxEntries != spec.Maps[xdpMapBlockV6].MaxEntries {
		t.Errorf("the pin of %s: %+v, %v; want max entries %d", xdpMapBlockV6, info, err, spec.Maps[xdpMapBlockV6].MaxEntries)
	}

	// Everything else kept its contents.
	list, err := dp2.Blocked()
	if err != nil || len(list) != 1 || list[0].Prefix != blocked {
		t.Errorf("block list after the reopen: %v, %v; want only %s", list, err, blocked)
	}
	if c := liveConfig(t, dp2.Objects); c.BlockCount != 1 {
		t.Errorf("config_map counts %d blocked entries, want 1", c.BlockCount)
	}
	keys, err := mapKeys[xdpLpmV4](dp2.xdp.AllowV4)
	if err != nil || len(keys) != 1 || prefixOf4(keys[0]) != allow {
		t.Errorf("allow_v4 after the reopen: %v, %v; want %s", keys, err, allow)
	}
	countersAfter, err := dp2.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if countersAfter[ReasonChecksum] != countersBefore[ReasonChecksum] || countersBefore[ReasonChecksum] != 1 {
		t.Errorf("checksum drops %d before the reopen, %d after: the counters were not kept", countersBefore[ReasonChecksum], countersAfter[ReasonChecksum])
	}
	registryAfter, err := dp2.RegistryCounters()
	if err != nil {
		t.Fatal(err)
	}
	if len(registryAfter) != len(registryBefore) || registryAfter[0] != registryBefore[0] {
		t.Errorf("registry counters %v before the reopen, %v after", registryBefore, registryAfter)
	}
	// The programs judge by the kept maps: the blocked source is dropped.
	if _, r := runXDP(t, dp2.Objects, tcpPacket(false, 1234, 4873, 0x02, "")); r != ReasonBlocked {
		t.Errorf("a SYN from the kept block list to the proxy port: %s, want blocked", verdictWord(r))
	}
}
