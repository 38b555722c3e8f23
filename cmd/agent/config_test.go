package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
)

func TestConfigShowsDefaultTableAndDump(t *testing.T) {
	for _, args := range [][]string{{"config"}, {"config", "get"}} {
		out, errs, code := run(t, "", args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		for _, want := range []string{"registryHash  1   0xa1b2c3d4", "PREMIUM_TYPES|PRIVATE_REGISTRY|DEBUG", "raw", "dump: 0x01a1b2c3d40000000702185000"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, out)
			}
		}
	}
}

func TestConfigEnvAndErrors(t *testing.T) {
	t.Setenv("BUN_CONFIG_TERMINAL_ROWS", "40")
	out, _, code := run(t, "", "config")
	if code != 0 || !strings.Contains(out, "dump: 0x01a1b2c3d40000000702285000") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	t.Setenv("BUN_CONFIG_TERMINAL_ROWS", "0")
	_, errs, code := run(t, "", "config")
	if code == 0 || !strings.Contains(errs, "BUN_CONFIG_TERMINAL_ROWS") {
		t.Fatalf("exit %d, stderr %q: want an error naming the variable", code, errs)
	}
}

func TestConfigGetFromRunningAgent(t *testing.T) {
	t.Setenv("BUN_CONFIG_TERMINAL_COLS", "120")
	a := runningAgent(t)
	t.Setenv("BUN_CONFIG_TERMINAL_COLS", "80") // the local state differs from the agent's
	out, errs, code := run(t, "", "config", "get", "--from", a.AdminAddr().String())
	if code != 0 || !strings.Contains(out, "dump: 0x01a1b2c3d40000000702187800") {
		t.Fatalf("exit %d (%s):\n%s", code, errs, out)
	}
	_, errs, code = run(t, "", "config", "get", "--from", "127.0.0.1:1")
	if code == 0 || !strings.Contains(errs, "config get") {
		t.Fatalf("unreachable agent: exit %d, %q", code, errs)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := run(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "regedge ") || !strings.Contains(out, "cilium/ebpf:") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// runningAgent starts an agent in-process on ephemeral loopback ports.
func runningAgent(t *testing.T) *agent.Agent {
	t.Helper()
	return runningAgentWith(t, nil)
}

// runningAgentWith starts an agent on loopback ephemeral ports from the
// defaults, changed by tweak; it stops with the test.
func runningAgentWith(t *testing.T, tweak func(*config.Config)) *agent.Agent {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Bus.Port = 0
	cfg.WebSocket.Port = 0
	cfg.Proxy.ListenPort = 0
	cfg.Fleet.Listen = "127.0.0.1:0" // with the cache on, not the machine's 4875
	if tweak != nil {
		tweak(cfg)
	}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func TestConfigSetChangesRunningAgent(t *testing.T) {
	a := runningAgent(t)
	admin := a.AdminAddr().String()
	out, errs, code := run(t, "", "config", "set", "rows", "40", "--to", admin)
	if code != 0 || strings.TrimSpace(out) != "0x01a1b2c3d40000000702285000" || a.State().Rows != 40 {
		t.Fatalf("config set: exit %d %q %s", code, out, errs)
	}
	out, _, code = run(t, "", "config", "registryHash", "0xdeadbeef", "--to", admin) // the seed's form
	if code != 0 || strings.TrimSpace(out) != "0x01deadbeef0000000702285000" {
		t.Fatalf("config FIELD VALUE: exit %d %q", code, out)
	}
	_, errs, code = run(t, "", "config", "set", "terminalMode", "9", "--to", admin)
	if code == 0 || !strings.Contains(errs, "terminalMode") || a.State().TerminalMode != 2 {
		t.Fatalf("invalid set: exit %d %q, state %v", code, errs, a.State())
	}
	if _, _, code = run(t, "", "config", "rows"); code != 2 {
		t.Fatalf("config with one argument: exit %d, want 2", code)
	}
}

func TestConfigPushTable(t *testing.T) {
	a, b := runningAgent(t), runningAgent(t)
	bus := func(x *agent.Agent) string {
		return fmt.Sprintf("127.0.0.1:%d", x.BusAddr().(*net.UDPAddr).Port)
	}
	out, errs, code := run(t, "", "config", "push", "--to", bus(a)+","+bus(b), "terminalMode=3", "rows=40", "cols=120")
	if code != 0 {
		t.Fatalf("push: exit %d: %s\n%s", code, errs, out)
	}
	// Two rows and one group.
	if strings.Count(out, "0x01a1b2c3d40000000703287800") != 3 || strings.Count(out, " yes ") != 2 || !hasRow(out, "0x01a1b2c3d40000000703287800", "2", "2") {
		t.Fatalf("push table:\n%s", out)
	}
	if a.State().Cols != 120 || b.State().TerminalMode != 3 {
		t.Fatalf("states %v %v", a.State(), b.State())
	}
	// A target that never answers: reported, exit 1.
	dead, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	out, errs, code = run(t, "", "config", "push", "--to", bus(a)+","+deadAddr, "--deadline", "600ms", "--retry", "50ms", "rows=41")
	if code != 1 || !strings.Contains(out, deadAddr) || !strings.Contains(out, " no ") || !strings.Contains(errs, "1 of 2 targets did not converge") {
		t.Fatalf("push with a dead target: exit %d, %s\n%s", code, errs, out)
	}
}
