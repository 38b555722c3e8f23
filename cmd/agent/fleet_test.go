//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/loader/loadertest"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/vethpair"
)

// fleetAgent is one agent of the fleet test, in its own namespace with its
// own bpffs (pins) and state file.
type fleetAgent struct {
	spoke  vethpair.Spoke
	cfg    *config.Config
	opts   []agent.Option
	agent  *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

func (f *fleetAgent) start(t *testing.T) {
	t.Helper()
	testutil.In(t, f.spoke.NS, func() {
		a, err := agent.New(f.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), f.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Listen(); err != nil {
			t.Fatal(err)
		}
		f.agent = a
	})
	if f.agent.BPFMode() != "kernel" {
		t.Fatalf("agent on %s: mode %s: %s", f.spoke.If, f.agent.BPFMode(), f.agent.BPFReason())
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- f.agent.Serve(ctx) }()
}

func (f *fleetAgent) stop(t *testing.T) {
	t.Helper()
	if f.cancel == nil {
		return
	}
	f.cancel()
	if err := <-f.done; err != nil {
		t.Errorf("agent on %s: %v", f.spoke.If, err)
	}
	f.cancel = nil
}

// startFleet starts n agents, each in its own spoke namespace of a star
// with the kernel datapath attached to its veth, allowing the whole
// 192.0.2.0/24 (the hub's addresses) on its bus; adjust, when not nil, edits
// each agent (its config, its options) before it starts. It returns the
// star, the agents and their bus addresses.
func startFleet(t *testing.T, n int, adjust func(i int, f *fleetAgent)) (*vethpair.Star, []*fleetAgent, []string) {
	t.Helper()
	testutil.RequireRoot(t)
	star, err := vethpair.CreateStar(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { star.Close() })
	fleet := make([]*fleetAgent, n)
	var targets []string
	for i, sp := range star.Spokes {
		cfg := config.Default()
		cfg.Agent.Interfaces = []string{sp.If}
		cfg.Agent.BPF = "required"
		cfg.Agent.BPFFS = loadertest.BPFFS(t)
		cfg.Agent.StateFile = filepath.Join(t.TempDir(), "state")
		cfg.Bus.Allow = []string{"192.0.2.0/24"}
		cfg.Admin.Listen = "127.0.0.1:0"
		fleet[i] = &fleetAgent{spoke: sp, cfg: cfg}
		if adjust != nil {
			adjust(i, fleet[i])
		}
		fleet[i].start(t)
		t.Cleanup(func() { fleet[i].stop(t) })
		targets = append(targets, fmt.Sprintf("%s:4874", sp.Addr))
	}
	return star, fleet, targets
}

// TestFleetPush: three agents in three namespaces, BPF attached, and a
// pusher in a fourth. A push converges on all; with one agent stopped the
// push reports it and exits non-zero; after it restarts (state restored from
// its file) a second push converges. Invalid datagrams and datagrams from a
// source off the allow-list are dropped in XDP and never applied.
func TestFleetPush(t *testing.T) {
	star, fleet, targets := startFleet(t, 3, nil)
	push := func(args ...string) (string, string, int) {
		t.Helper()
		var out, errs string
		var code int
		testutil.In(t, star.Hub, func() {
			out, errs, code = run(t, "", append([]string{"config", "push", "--to", strings.Join(targets, ",")}, args...)...)
		})
		return out, errs, code
	}

	out, errs, code := push("rows=40", "cols=120")
	if code != 0 || strings.Count(out, " yes ") != 3 {
		t.Fatalf("first push: exit %d %s\n%s", code, errs, out)
	}
	for _, f := range fleet {
		if s := f.agent.State(); s.Rows != 40 || s.Cols != 120 {
			t.Fatalf("agent on %s: %v", f.spoke.If, s)
		}
	}

	fleet[1].stop(t)
	out, errs, code = push("--deadline", "1s", "--retry", "100ms", "terminalMode=3")
	if code != 1 || strings.Count(out, " yes ") != 2 || !strings.Contains(out, targets[1]) || !strings.Contains(errs, "1 of 3") {
		t.Fatalf("push with one agent down: exit %d %s\n%s", code, errs, out)
	}

	fleet[1].start(t)
	if s := fleet[1].agent.State(); s.Rows != 40 || s.Cols != 120 || s.TerminalMode != 2 {
		t.Fatalf("restarted agent restored %v, want rows 40 cols 120 mode 2", s)
	}
	out, errs, code = push("terminalMode=3")
	if code != 0 || strings.Count(out, " yes ") != 3 {
		t.Fatalf("push after the restart: exit %d %s\n%s", code, errs, out)
	}

	// Invalid datagrams and sources off the allow-list never reach the agent.
	a0 := fleet[0]
	before, err := loader.ReadStatus(a0.cfg.Agent.BPFFS)
	if err != nil {
		t.Fatal(err)
	}
	stateBefore := a0.agent.State()
	if err := star.AddHubAddr(0, netip.MustParsePrefix("198.51.100.1/32")); err != nil {
		t.Fatal(err)
	}
	valid := codec.Update(codec.FieldRows, 99)
	good := codec.AppendDatagram(nil, codec.DefaultState(), &valid)
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xff
	dst := &net.UDPAddr{IP: a0.spoke.Addr.AsSlice(), Port: 4874}
	testutil.In(t, star.Hub, func() {
		inside, err := net.ListenUDP("udp4", &net.UDPAddr{IP: a0.spoke.HubAddr.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		defer inside.Close()
		outside, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer outside.Close()
		for i := 0; i < 5; i++ {
			inside.WriteToUDP(bad, dst)
			outside.WriteToUDP(good, dst)
		}
	})
	testutil.Eventually(t, 10*time.Second, "XDP to drop 5 checksum and 5 source datagrams", func() bool {
		st, err := loader.ReadStatus(a0.cfg.Agent.BPFFS)
		return err == nil && st.XDP[loader.ReasonChecksum]-before.XDP[loader.ReasonChecksum] == 5 &&
			st.XDP[loader.ReasonSource]-before.XDP[loader.ReasonSource] == 5
	})
	if a0.agent.State() != stateBefore {
		t.Fatalf("dropped datagrams changed the state: %v", a0.agent.State())
	}
}
