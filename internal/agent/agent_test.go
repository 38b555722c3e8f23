package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/config"
)

func startAgent(t *testing.T, cfg *config.Config) *Agent {
	t.Helper()
	cfg.Admin.Listen = "127.0.0.1:0"
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return a
}

func get(t *testing.T, a *Agent, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHealthHasTheSeedShapePlusBPF(t *testing.T) {
	a := startAgent(t, config.Default())
	code, body := get(t, a, "/health")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	var h struct {
		Status string `json:"status"`
		Config struct {
			Version      int     `json:"version"`
			RegistryHash string  `json:"registryHash"`
			Uptime       float64 `json:"uptime"`
		} `json:"config"`
		Connections struct {
			WebSocket *int     `json:"websocket"`
			Uptime    *float64 `json:"uptime"`
		} `json:"connections"`
		Timestamp int64 `json:"timestamp"`
		BPF       struct {
			Mode       string   `json:"mode"`
			Interfaces []string `json:"interfaces"`
		} `json:"bpf"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	if h.Status != "healthy" || h.Config.Version != 1 || h.Config.RegistryHash != "0xa1b2c3d4" ||
		h.Connections.WebSocket == nil || h.Connections.Uptime == nil || h.Timestamp == 0 ||
		h.BPF.Mode != "userspace" || h.BPF.Interfaces == nil {
		t.Fatalf("health %s", body)
	}
}

func TestReadyzConfigAndMetrics(t *testing.T) {
	a := startAgent(t, config.Default())
	if code, _ := get(t, a, "/readyz"); code != 200 {
		t.Fatalf("/readyz %d", code)
	}
	code, body := get(t, a, "/api/config")
	if code != 200 || !strings.Contains(body, `"dump":"0x01a1b2c3d40000000702185000"`) || !strings.Contains(body, `"registryHash":"0xa1b2c3d4"`) {
		t.Fatalf("/api/config %d %s", code, body)
	}
	code, body = get(t, a, "/metrics")
	if code != 200 || !strings.Contains(body, `regedge_bpf_mode{mode="userspace"} 1`) || !strings.Contains(body, `regedge_bpf_mode{mode="kernel"} 0`) {
		t.Fatalf("/metrics %d:\n%s", code, body)
	}
}

func TestBPFRequiredFailsWithoutDatapath(t *testing.T) {
	cfg := config.Default()
	cfg.Agent.BPF = "required"
	if _, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); !errors.Is(err, ErrBPFRequired) {
		t.Fatalf("New = %v, want ErrBPFRequired", err)
	}
}

func TestInvalidConfigRefused(t *testing.T) {
	cfg := config.Default()
	cfg.Config.Rows = 0
	if _, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("New accepted rows=0")
	}
}
