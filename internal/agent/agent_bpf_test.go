package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/testutil"
)

func scrape(t *testing.T, a *Agent, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	admin.Handler(a, a.registry, time.Now(), nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: %d", path, rec.Code)
	}
	return rec.Body.String()
}

// TestAgentAttachesKernelDatapath: with an interface configured and root,
// agent.bpf auto attaches XDP and TC, says so in /health and exports the
// kernel metrics; stopping the agent leaves the pins for the next one.
func TestAgentAttachesKernelDatapath(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := t.TempDir()
	if _, err := loader.EnsureBPFFS(bpffs); err != nil {
		testutil.SkipOrFail(t, err.Error())
	}
	t.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })

	cfg := config.Default()
	cfg.Agent.Interfaces = []string{h.IfB}
	cfg.Agent.BPFFS = bpffs
	cfg.Admin.Listen = "127.0.0.1:0"
	var a *Agent
	testutil.In(t, h.B, func() {
		var err error
		if a, err = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Fatal(err)
		}
		if err := a.Listen(); err != nil {
			t.Fatal(err)
		}
	})
	if a.BPFMode() != "kernel" {
		t.Fatalf("mode %s: %s", a.BPFMode(), a.BPFReason())
	}
	var hl struct {
		BPF struct {
			Mode       string   `json:"mode"`
			Interfaces []string `json:"interfaces"`
		} `json:"bpf"`
	}
	if err := json.Unmarshal([]byte(scrape(t, a, "/health")), &hl); err != nil {
		t.Fatal(err)
	}
	if hl.BPF.Mode != "kernel" || len(hl.BPF.Interfaces) != 1 || hl.BPF.Interfaces[0] != h.IfB {
		t.Fatalf("/health bpf %+v", hl.BPF)
	}
	metrics := scrape(t, a, "/metrics")
	for _, want := range []string{`regedge_bpf_mode{mode="kernel"} 1`, `regedge_kernel_drops_total{hook="xdp",reason="checksum"} 0`, `regedge_kernel_packets_total{hook="tc",verdict="pass"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := loader.ReadStatus(bpffs)
	if err != nil || len(st.Links) != 3 {
		t.Fatalf("after stop: status %+v, %v; want the 3 pinned links", st, err)
	}
	testutil.In(t, h.B, func() {
		if err := loader.Detach(bpffs, []string{h.IfB}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAgentAutoFallsBackAndRequiredFails(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := config.Default()
	cfg.Agent.Interfaces = []string{"rgnosuchif0"}
	cfg.Agent.BPFFS = t.TempDir()
	if _, err := loader.EnsureBPFFS(cfg.Agent.BPFFS); err != nil {
		testutil.SkipOrFail(t, err.Error())
	}
	t.Cleanup(func() { unix.Unmount(cfg.Agent.BPFFS, unix.MNT_DETACH) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if a.BPFMode() != "userspace" || !strings.Contains(a.BPFReason(), "rgnosuchif0") {
		t.Fatalf("auto: mode %s reason %q", a.BPFMode(), a.BPFReason())
	}
	if entries, _ := os.ReadDir(loader.PinRoot(cfg.Agent.BPFFS)); len(entries) != 0 {
		t.Fatalf("a failed attach left pins behind: %v", entries)
	}
	cfg.Agent.BPF = "required"
	if _, err := New(cfg, log); !errors.Is(err, ErrBPFRequired) || !strings.Contains(err.Error(), "rgnosuchif0") {
		t.Fatalf("required: %v", err)
	}
}
