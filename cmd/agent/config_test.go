package main

import (
	"context"
	"io"
	"log/slog"
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
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Listen = "127.0.0.1:0"
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
	defer func() { cancel(); <-done }()

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
