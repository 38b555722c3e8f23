// Package agent runs the regedge agent: it owns the config state and starts
// the listeners of INTERFACE.md. Today that is the admin listener (/health,
// /readyz, /metrics, /api/config); the proxy, the kernel datapath, the
// WebSocket server and the config bus are added here as their issues land.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
)

// ErrBPFRequired is returned by Run when agent.bpf is "required" and the
// kernel datapath cannot be attached.
var ErrBPFRequired = errors.New("agent: agent.bpf is \"required\" but the kernel datapath is not available")

// Agent is one running agent.
type Agent struct {
	cfg     *config.Config
	log     *slog.Logger
	started time.Time

	mu    sync.RWMutex
	state codec.State

	ready    atomic.Bool
	bpfMode  string
	adminLn  net.Listener
	registry *prometheus.Registry
}

// New checks cfg and prepares an agent; nothing listens until Run.
func New(cfg *config.Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, state: cfg.State(), registry: prometheus.NewRegistry()}
	// The kernel datapath is not part of this build yet: every check runs in
	// userspace, and the agent says so in its log, /health and metrics.
	switch cfg.Agent.BPF {
	case "required":
		return nil, ErrBPFRequired
	default:
		a.bpfMode = "userspace"
	}
	mode := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "regedge_bpf_mode", Help: "1 for the active datapath mode (kernel or userspace).",
	}, []string{"mode"})
	for _, m := range []string{"kernel", "userspace"} {
		v := 0.0
		if m == a.bpfMode {
			v = 1
		}
		mode.WithLabelValues(m).Set(v)
	}
	a.registry.MustRegister(mode, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return a, nil
}

// State returns the current config state.
func (a *Agent) State() codec.State {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.state
}

// WebSocketClients is the number of connected config clients.
func (a *Agent) WebSocketClients() int { return 0 }

// BPFMode is "kernel" or "userspace".
func (a *Agent) BPFMode() string { return a.bpfMode }

// Interfaces lists the interfaces the kernel datapath is attached to.
func (a *Agent) Interfaces() []string {
	if a.bpfMode != "kernel" {
		return nil
	}
	return a.cfg.Agent.Interfaces
}

// Ready reports whether every listener is up.
func (a *Agent) Ready() bool { return a.ready.Load() }

// AdminAddr is the admin listener's address once Run has bound it.
func (a *Agent) AdminAddr() net.Addr {
	if a.adminLn == nil {
		return nil
	}
	return a.adminLn.Addr()
}

// Listen binds the listeners; Serve then serves them. Split so that callers
// (and tests) learn the bound addresses before serving starts.
func (a *Agent) Listen() error {
	ln, err := net.Listen("tcp", a.cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("agent: admin listener: %w", err)
	}
	a.adminLn = ln
	return nil
}

// Serve serves until ctx is done, then shuts down gracefully.
func (a *Agent) Serve(ctx context.Context) error {
	a.started = time.Now()
	srv := &http.Server{
		Handler:           admin.Handler(a, a.registry, a.started),
		ReadHeaderTimeout: 5 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(a.adminLn) }()
	a.log.Info("agent started",
		"admin", a.adminLn.Addr().String(),
		"state", a.State().Dump(),
		"bpf_mode", a.bpfMode,
		"bpf_reason", "the kernel datapath is not in this build; every check runs in userspace",
	)
	a.ready.Store(true)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("agent: admin listener: %w", err)
	}
	a.ready.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	a.log.Info("agent stopped")
	return err
}
