// Package agent runs the regedge agent: it owns the config state, attaches
// the kernel datapath (per agent.bpf) and starts the listeners of
// INTERFACE.md. Today that is the admin listener (/health, /readyz, /metrics,
// /api/config); the proxy, the WebSocket server and the config bus are added
// here as their issues land.
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
	"github.com/regedge/regedge/internal/loader"
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

	ready     atomic.Bool
	bpfMode   string
	bpfReason string   // why the mode is userspace, in plain words
	bpfNotes  []string // fallbacks in force
	dp        *loader.Datapath
	adminLn   net.Listener
	registry  *prometheus.Registry
}

// New checks cfg and prepares an agent; nothing listens until Run.
func New(cfg *config.Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, state: cfg.State(), registry: prometheus.NewRegistry()}
	if err := a.openDatapath(); err != nil {
		return nil, err
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

// openDatapath attaches the kernel half per agent.bpf: "off" never tries,
// "auto" falls back to userspace checks and says why, "required" fails.
func (a *Agent) openDatapath() error {
	a.bpfMode = "userspace"
	cfg := a.cfg
	switch {
	case cfg.Agent.BPF == "off":
		a.bpfReason = "agent.bpf is off"
		return nil
	case len(cfg.Agent.Interfaces) == 0:
		a.bpfReason = "no interfaces configured (agent.interfaces, REGEDGE_INTERFACES or --interface)"
		if cfg.Agent.BPF == "required" {
			return fmt.Errorf("%w: %s", ErrBPFRequired, a.bpfReason)
		}
		return nil
	}
	opts := loader.DefaultOptions()
	opts.BusPort = uint16(cfg.Bus.Port)
	opts.ProxyPorts = []uint16{uint16(cfg.Proxy.ListenPort)}
	dp, err := loader.Open(loader.Config{
		Options: opts, BPFFS: cfg.Agent.BPFFS, Interfaces: cfg.Agent.Interfaces,
		XDPGeneric: cfg.Agent.XDPMode == "generic",
	})
	if err == nil {
		err = a.pushToKernel(dp.Objects)
		if err != nil {
			dp.Close()
		}
	}
	if err != nil {
		a.bpfReason = loader.Explain(err)
		if cfg.Agent.BPF == "required" {
			return fmt.Errorf("%w: %s", ErrBPFRequired, a.bpfReason)
		}
		return nil
	}
	a.dp, a.bpfMode, a.bpfReason, a.bpfNotes = dp, "kernel", "", dp.Notes
	a.registry.MustRegister(loader.NewCollector(dp.Objects))
	return nil
}

// pushToKernel applies the config the kernel judges by: accepted versions,
// the bus allow-list and the agent's own state.
func (a *Agent) pushToKernel(o *loader.Objects) error {
	s := a.State()
	if err := o.SetVersions(codec.NewVersionSet(s.Version)); err != nil {
		return err
	}
	if err := o.SetAllow(a.cfg.AllowPrefixes()); err != nil {
		return err
	}
	return o.SetOwnState(s)
}

// BPFReason says why the agent runs in userspace mode ("" in kernel mode).
func (a *Agent) BPFReason() string { return a.bpfReason }

// BPFNotes lists the fallbacks in force in kernel mode.
func (a *Agent) BPFNotes() []string { return a.bpfNotes }

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
		"interfaces", a.Interfaces(),
	)
	if a.bpfMode == "userspace" {
		a.log.Warn("kernel datapath not attached: every check runs in userspace", "reason", a.bpfReason)
	}
	for _, n := range a.bpfNotes {
		a.log.Info("kernel datapath note", "note", n)
	}
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
	if a.dp != nil {
		// Pins stay: the programs keep judging packets until the next agent.
		err = errors.Join(err, a.dp.Close())
	}
	a.log.Info("agent stopped")
	return err
}
