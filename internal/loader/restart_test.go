//go:build linux

package loader

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/testutil"
)

// openRaw opens the datapath inside B exactly as configured (no settings
// written afterwards) and registers its cleanup.
func openRaw(t *testing.T, h *testutil.Hosts, cfg Config) *Datapath {
	t.Helper()
	var dp *Datapath
	testutil.In(t, h.B, func() {
		var err error
		if dp, err = Open(cfg); err != nil {
			t.Fatalf("Open: %v", err)
		}
	})
	return dp
}

func detachIn(t *testing.T, h *testutil.Hosts, bpffs string) {
	t.Helper()
	testutil.In(t, h.B, func() {
		if err := Detach(bpffs, []string{h.IfB}); err != nil {
			t.Errorf("Detach: %v", err)
		}
	})
}

func liveConfig(t testing.TB, o *Objects) xdpRegedgeCfg {
	t.Helper()
	var c xdpRegedgeCfg
	if err := o.xdp.ConfigMap.Lookup(uint32(0), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReopenNeverWritesLiveConfig: a restart on pinned maps leaves the live
// settings byte for byte until it has its own, and writes its own before any
// of its programs is attached: the programs never judge a datagram by a
// half-written config (the old code wrote an empty allow-list first, and a
// valid datagram was dropped as "source" in between).
func TestReopenNeverWritesLiveConfig(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := testBPFFS(t)
	first := &Settings{Versions: codec.NewVersionSet(1, 2), Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	cfg := Config{Options: DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}, Settings: first}
	dp1 := openRaw(t, h, cfg)
	live := liveConfig(t, dp1.Objects)
	if live.Allow4N != 1 {
		t.Fatalf("first start: allow4_n = %d, want 1", live.Allow4N)
	}
	dp1.Close()
	defer detachIn(t, h, bpffs)

	valid := busPacket(false, 0, validDatagram()) // from 192.0.2.10
	var during xdpRegedgeCfg
	var verdict Reason
	testHookBeforeAttach = func(d *Datapath) {
		during = liveConfig(t, d.Objects)
		_, verdict = runXDP(t, d.Objects, valid)
	}
	t.Cleanup(func() { testHookBeforeAttach = nil })

	// A restart that brings no settings of its own changes nothing.
	cfg.Settings = nil
	dp2 := openRaw(t, h, cfg)
	if during != live {
		t.Errorf("opening the pins rewrote config_map:\nbefore %+v\nduring %+v", live, during)
	}
	if verdict != ReasonOK {
		t.Errorf("a valid datagram from the allow-list while the new agent opened: %s, want ok", verdictWord(verdict))
	}
	if got := liveConfig(t, dp2.Objects); got != live {
		t.Errorf("after Open: config_map %+v, want %+v", got, live)
	}
	if err := dp2.SetVersions(codec.NewVersionSet(1, 2)); err != nil { // a write of the same value
		t.Fatal(err)
	}
	if got := liveConfig(t, dp2.Objects); got != live {
		t.Errorf("rewriting the versions changed the rest of config_map: %+v, want %+v", got, live)
	}
	dp2.Close()

	// A restart with new settings has them in place before its programs run.
	cfg.Settings = &Settings{Versions: codec.NewVersionSet(1), Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
	dp3 := openRaw(t, h, cfg)
	defer dp3.Close()
	if verdict != ReasonSource {
		t.Errorf("before the new programs were attached, a datagram from outside the new allow-list: %s, want source", verdictWord(verdict))
	}
	if during.Allow4N != 1 || during.Versions != codec.NewVersionSet(1) {
		t.Errorf("config_map before attach %+v, want the new settings", during)
	}
}

// TestSeveredLinksAreReattached: after the interface is deleted and
// re-created, the pinned links are severed; the next Open unpins them,
// attaches anew, says so, and the new interface's packets are judged.
func TestSeveredLinksAreReattached(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := testBPFFS(t)
	cfg := Config{Options: DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB},
		Settings: &Settings{Versions: codec.DefaultVersions, Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}}
	dp := openRaw(t, h, cfg)
	dp.Close()
	defer detachIn(t, h, bpffs)
	if err := h.Recreate(); err != nil {
		t.Fatal(err)
	}
	dp2 := openRaw(t, h, cfg)
	defer dp2.Close()
	notes := strings.Join(dp2.Notes, "\n")
	for _, name := range []string{"xdp-", "tcx-ingress-", "tcx-egress-"} {
		if !strings.Contains(notes, name+h.IfB+": its interface was deleted") {
			t.Errorf("no note on re-attaching %s%s; notes:\n%s", name, h.IfB, notes)
		}
	}
	recv := udpIn(t, h, "B", "192.0.2.2:4874")
	send := udpIn(t, h, "A", ":0")
	dst, _ := net.ResolveUDPAddr("udp", "192.0.2.2:4874")
	bad := validDatagram()
	bad[len(bad)-1] ^= 1
	before, _ := dp2.Counters()
	for _, b := range [][]byte{bad, validDatagram()} {
		if _, err := send.WriteToUDP(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	got := receive(t, recv, 1, 5*time.Second)
	got = append(got, drain(recv, 200*time.Millisecond)...)
	if len(got) != 1 {
		t.Fatalf("%d datagrams reached the socket on the re-created interface, want only the valid one", len(got))
	}
	after, _ := dp2.Counters()
	if after[ReasonChecksum] != before[ReasonChecksum]+1 {
		t.Errorf("checksum drops %d -> %d, want one more", before[ReasonChecksum], after[ReasonChecksum])
	}
}

// TestSecondPinDirOnOneInterfaceNamesTheHolder: two agents with different
// pin directories on one interface would judge and count every packet
// twice; the second gets an error naming the first's pinned link and leaves
// nothing behind, and the first keeps working.
func TestSecondPinDirOnOneInterfaceNamesTheHolder(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs1, bpffs2 := testBPFFS(t), testBPFFS(t)
	settings := &Settings{Versions: codec.DefaultVersions, Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	dp1 := openRaw(t, h, Config{Options: DefaultOptions(), BPFFS: bpffs1, Interfaces: []string{h.IfB}, Settings: settings})
	defer detachIn(t, h, bpffs1)
	defer dp1.Close()
	for _, only := range []string{"", "xdp"} {
		var err error
		testutil.In(t, h.B, func() {
			var dp *Datapath
			if only == "xdp" {
				// Without the TC check in the way: the XDP attach itself.
				for _, nl := range dp1.links {
					if strings.HasPrefix(nl.name, "tcx-") {
						os.Remove(filepath.Join(PinRoot(bpffs1), LayoutVersion, "links", nl.name))
						nl.l.Close()
					}
				}
			}
			dp, err = Open(Config{Options: DefaultOptions(), BPFFS: bpffs2, Interfaces: []string{h.IfB}, Settings: settings})
			if err == nil {
				dp.Close()
			}
		})
		t.Logf("%s: %v", only, err)
		if !errors.Is(err, ErrHeld) {
			t.Fatalf("%s: second agent on the same interface: %v, want ErrHeld", only, err)
		}
		if want := filepath.Join(PinRoot(bpffs1), LayoutVersion, "links"); !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name the holder's pin under %s: %v", want, err)
		}
		if _, serr := os.Stat(filepath.Join(PinRoot(bpffs2), LayoutVersion)); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("the refused agent left pins behind: %v", serr)
		}
	}
	// The first agent still judges.
	if _, r := runXDP(t, dp1.Objects, busPacket(false, 0, validDatagram())); r != ReasonOK {
		t.Errorf("the first agent's XDP: %s", verdictWord(r))
	}
}

// deleteIfB deletes B's end of the veth pair (its peer goes with it).
func deleteIfB(t *testing.T, h *testutil.Hosts) {
	t.Helper()
	hb, err := netlink.NewHandleAt(h.B)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	l, err := hb.LinkByName(h.IfB)
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.LinkDel(l); err != nil {
		t.Fatal(err)
	}
}

// TestDefunctLinkPinsAreRemovedAtStart: the interface of an agent's links
// is deleted while no agent runs. The pins stay; `bpf status` (ReadStatus,
// from the pins alone, in another network namespace) marks each defunct
// instead of listing it as live. The next start removes them, whether the
// deleted interface is still configured (its attach then fails: the pins
// must not stay behind) or no longer.
func TestDefunctLinkPinsAreRemovedAtStart(t *testing.T) {
	settings := &Settings{Versions: codec.DefaultVersions, Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	for _, stillConfigured := range []bool{true, false} {
		name := "no longer configured"
		if stillConfigured {
			name = "still configured"
		}
		t.Run(name, func(t *testing.T) {
			h := testutil.NewHosts(t)
			bpffs := testBPFFS(t)
			cfg := Config{Options: DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}, Settings: settings}
			dp := openRaw(t, h, cfg)
			dp.Close()
			defer Detach(bpffs, nil)
			pins := []string{"tcx-egress-" + h.IfB, "tcx-ingress-" + h.IfB, "xdp-" + h.IfB}

			st, err := ReadStatus(bpffs)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range st.Links {
				if l.Defunct != "" {
					t.Errorf("%s is defunct before its interface was deleted: %s", l.Name, l.Defunct)
				}
			}
			deleteIfB(t, h)
			if st, err = ReadStatus(bpffs); err != nil {
				t.Fatal(err)
			}
			var defunct []string
			for _, l := range st.Links {
				if strings.Contains(l.Defunct, "interface was deleted") {
					defunct = append(defunct, l.Name)
				}
			}
			if strings.Join(defunct, " ") != strings.Join(pins, " ") {
				t.Errorf("defunct links %v, want %v; status: %+v", defunct, pins, st.Links)
			}

			if !stillConfigured {
				cfg.Interfaces = nil
			}
			var notes []string
			testutil.In(t, h.B, func() {
				dp, err := Open(cfg)
				if stillConfigured {
					if err == nil || !strings.Contains(err.Error(), h.IfB) {
						t.Errorf("Open with the deleted %s configured: %v, want an error naming it", h.IfB, err)
					}
				} else if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if dp != nil {
					notes = dp.Notes
					dp.Close()
				}
			})
			left, err := os.ReadDir(filepath.Join(PinRoot(bpffs), LayoutVersion, "links"))
			if err != nil || len(left) != 0 {
				t.Errorf("link pins after the start: %v, %v; want none", left, err)
			}
			if !stillConfigured {
				all := strings.Join(notes, "\n")
				for _, p := range pins {
					if !strings.Contains(all, p+": its interface was deleted (the link is severed): unpinned it") {
						t.Errorf("no note on removing %s; notes:\n%s", p, all)
					}
				}
			}
		})
	}
}
