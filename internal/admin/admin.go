// Package admin serves the agent's admin listener: /health, /readyz,
// /metrics and /api/config (docs/cli.md, docs/metrics.md). It never serves proxy traffic.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/token"
)

// Status is what the admin endpoints report about the running agent, and
// how they change its state.
type Status interface {
	State() codec.State
	SetState(codec.State) (codec.State, error)
	PurgeCache(pkg, version string) (int, error)
	WebSocketClients() int
	BPFMode() string   // "kernel" or "userspace"
	BPFReason() string // why userspace, in plain words
	BPFNotes() []string
	Interfaces() []string
	Ready() bool
	// Subsystems is each part's health, checked now (the proxy through
	// its own listener).
	Subsystems(ctx context.Context) Subsystems
	// EffectiveConfig is the configuration the agent runs with, secrets
	// redacted (JSON-encodable).
	EffectiveConfig() any
	// RecentLogs are the agent's last log lines (JSON lines).
	RecentLogs() []byte
}

// Subsystem statuses, worst last.
const (
	StatusOK       = "ok"
	StatusOff      = "off"      // turned off by the config: nothing wrong
	StatusDegraded = "degraded" // serving, with less than it should have
	StatusFailed   = "failed"   // not serving
)

// Subsystem is one part of the agent in /health, as `cilium status` lists
// them: a status, one line saying why, and what there is to know.
type Subsystem struct {
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
	Info   any    `json:"info,omitempty"`
}

// Subsystems are the parts /health reports.
type Subsystems struct {
	Proxy       Subsystem `json:"proxy"`
	Upstreams   Subsystem `json:"upstreams"`
	Cache       Subsystem `json:"cache"`
	Kernel      Subsystem `json:"kernel"`
	ConfigPlane Subsystem `json:"configPlane"`
}

func (s Subsystems) all() []Subsystem {
	return []Subsystem{s.Proxy, s.Upstreams, s.Cache, s.Kernel, s.ConfigPlane}
}

// overall is /health's top-level status: unhealthy when a part failed,
// degraded when one is degraded, else healthy.
func (s Subsystems) overall() string {
	worst := "healthy"
	for _, p := range s.all() {
		switch p.Status {
		case StatusFailed:
			return "unhealthy"
		case StatusDegraded:
			worst = "degraded"
		}
	}
	return worst
}

// notReady lists why the agent cannot serve: the proxy does not answer
// through its own listener, or no upstream can be reached.
func (s Subsystems) notReady() []string {
	var why []string
	if s.Proxy.Status == StatusFailed {
		why = append(why, "proxy: "+s.Proxy.Detail)
	}
	if s.Upstreams.Status == StatusFailed {
		why = append(why, "upstreams: "+s.Upstreams.Detail)
	}
	return why
}

// Options are the admin listener's switches.
type Options struct {
	// Pprof serves /debug/pprof/ (admin.pprof). Off by default: profiles
	// show memory and code paths, and a profile costs CPU.
	Pprof bool
	// LoopbackHosts are names, besides localhost and loopback IP
	// literals, under which a write on a loopback address is trusted
	// (admin.loopbackHosts).
	LoopbackHosts []string
}

// Handler returns the admin mux. reg is the registry /metrics exposes.
// Writes (PUT /api/config, DELETE /api/cache) are trusted without a token
// when they arrive on a loopback address with a loopback Host (localhost,
// a loopback IP literal, or one of Options.LoopbackHosts) and, from a
// browser, an Origin on that host; authorize admits the others (a
// config:write token); nil refuses them.
func Handler(st Status, reg *prometheus.Registry, started time.Time, authorize func(*http.Request) error, opts ...Options) http.Handler {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		up := time.Since(started).Seconds()
		s := st.State()
		ifaces := st.Interfaces()
		if ifaces == nil {
			ifaces = []string{}
		}
		subs := st.Subsystems(r.Context())
		// 200 whatever the status: /health is a report (liveness is
		// /livez, readiness /readyz); a probe that restarts the agent
		// because its upstream is down would fix nothing.
		writeJSON(w, http.StatusOK, health{
			Status:      subs.overall(),
			Config:      healthConfig{Version: s.Version, RegistryHash: config.Hash(s.RegistryHash), Uptime: up},
			Connections: healthConns{WebSocket: st.WebSocketClients(), Uptime: up},
			Timestamp:   time.Now().UnixMilli(),
			BPF:         healthBPF{Mode: st.BPFMode(), Interfaces: ifaces, Reason: st.BPFReason(), Notes: st.BPFNotes()},
			Subsystems:  &subs,
		})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !st.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, readiness{Status: "starting"})
			return
		}
		if why := st.Subsystems(r.Context()).notReady(); len(why) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, readiness{Status: "not ready", Reasons: why})
			return
		}
		writeJSON(w, http.StatusOK, readiness{Status: "ready"})
	})
	// Liveness: the process serves its admin listener. Nothing outside
	// the agent (an upstream, the kernel) makes it fail.
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, readiness{Status: "alive"})
	})
	mux.HandleFunc("GET /api/config", func(w http.ResponseWriter, r *http.Request) {
		s := st.State()
		writeJSON(w, http.StatusOK, apiConfig{State: config.FromCodec(s), Dump: s.Dump()})
	})
	mux.HandleFunc("DELETE /api/cache/{pkg...}", func(w http.ResponseWriter, r *http.Request) {
		if !mayWrite(w, r, authorize, o.LoopbackHosts) {
			return
		}
		pkg := r.PathValue("pkg")
		if pkg == "" || strings.Contains(pkg, "..") {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "want /api/cache/PKG[?version=V]"})
			return
		}
		n, err := st.PurgeCache(pkg, r.URL.Query().Get("version"))
		if err != nil {
			writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"purged": n, "package": pkg, "version": r.URL.Query().Get("version")})
	})
	mux.HandleFunc("PUT /api/config", func(w http.ResponseWriter, r *http.Request) {
		if !mayWrite(w, r, authorize, o.LoopbackHosts) {
			return
		}
		next, herr := parsePut(r, st.State())
		if herr != nil {
			writeJSON(w, http.StatusBadRequest, herr)
			return
		}
		got, err := st.SetState(next)
		switch {
		case errors.Is(err, state.ErrNotAllowed):
			writeJSON(w, http.StatusForbidden, apiError{Error: err.Error(), Rule: "version"})
			return
		case errors.Is(err, state.ErrStorage):
			// Valid, but not persisted (logged by the store): 507, so that
			// a client tells a disk problem from a refusal and retries.
			writeJSON(w, http.StatusInsufficientStorage, apiError{Error: err.Error(), Rule: "storage"})
			return
		case err != nil:
			var ce *codec.Error
			if errors.As(err, &ce) {
				writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error(), Field: ce.Field})
				return
			}
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, apiConfig{State: config.FromCodec(got), Dump: got.Dump()})
	})
	// For the support bundle (regedge sysdump): what the agent runs with
	// and what it said lately. Off loopback they need an admin token, as
	// writes do: logs carry client addresses, the config the layout of
	// the node.
	mux.HandleFunc("GET /api/debug/config", func(w http.ResponseWriter, r *http.Request) {
		if !mayWrite(w, r, authorize, o.LoopbackHosts) {
			return
		}
		writeJSON(w, http.StatusOK, st.EffectiveConfig())
	})
	mux.HandleFunc("GET /api/debug/logs", func(w http.ResponseWriter, r *http.Request) {
		if !mayWrite(w, r, authorize, o.LoopbackHosts) {
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Write(st.RecentLogs())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// Profiles, for measuring before optimising, with admin.pprof only:
	// the admin listener may be on the node's address.
	if o.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	return mux
}

// PutBody is the body of PUT /api/config: a whole state as a dump, or some
// fields by name (numbers, or "0x…" strings) applied to the current state.
type PutBody struct {
	Dump string                     `json:"dump,omitempty"`
	Set  map[string]json.RawMessage `json:"set,omitempty"`
}

type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
	Rule  string `json:"rule,omitempty"`
}

func parsePut(r *http.Request, cur codec.State) (codec.State, *apiError) {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	var body PutBody
	if err := dec.Decode(&body); err != nil {
		return cur, &apiError{Error: "body: " + err.Error(), Rule: `want {"dump":"0x…"} or {"set":{"field":value}}`}
	}
	if (body.Dump == "") == (len(body.Set) == 0) {
		return cur, &apiError{Error: "give either dump or set", Rule: `want {"dump":"0x…"} or {"set":{"field":value}}`}
	}
	if body.Dump != "" {
		s, err := codec.ParseDump(body.Dump)
		if err != nil {
			return cur, &apiError{Error: err.Error(), Field: "dump"}
		}
		return s, nil
	}
	next := cur
	for name, raw := range body.Set {
		f, ok := codec.FieldByName(name)
		if !ok {
			return cur, &apiError{Error: "unknown field", Field: name}
		}
		var v uint64
		var str string
		if err := json.Unmarshal(raw, &v); err != nil {
			if err := json.Unmarshal(raw, &str); err != nil {
				return cur, &apiError{Error: "value must be a number or a \"0x…\" string", Field: name}
			}
			h, err := config.ParseHash(str)
			if err != nil {
				return cur, &apiError{Error: err.Error(), Field: name}
			}
			v = uint64(h)
		}
		var err error
		if next, err = next.With(f.ID, v); err != nil {
			return cur, &apiError{Error: err.Error(), Field: name}
		}
	}
	return next, nil
}

// mayWrite admits a write: loopback-trusted (LoopbackTrusted: the
// loopback address is not enough, the Host must name the loopback too, so
// that a web page re-pointed at 127.0.0.1 by DNS rebinding is refused), or
// with an admin token (scope config:write). It answers the refusal itself.
func mayWrite(w http.ResponseWriter, r *http.Request, authorize func(*http.Request) error, loopbackHosts []string) bool {
	if LoopbackTrusted(r, loopbackHosts) {
		return true
	}
	if authorize == nil {
		msg := "admin writes off loopback need tokens.publicKeys and an admin token"
		if OnLoopbackListener(r) {
			msg = "admin writes without a token need a loopback Host (localhost, 127.0.0.1, [::1] or admin.loopbackHosts) and Origin"
		}
		writeJSON(w, http.StatusForbidden, apiError{Error: msg, Rule: "scope config:write"})
		return false
	}
	if err := authorize(r); err != nil {
		reason := "invalid"
		var te *token.Error
		if errors.As(err, &te) {
			reason = te.Result
		}
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "Invalid proxy token", Rule: reason})
		return false
	}
	return true
}

type health struct {
	Status      string       `json:"status"`
	Config      healthConfig `json:"config"`
	Connections healthConns  `json:"connections"`
	Timestamp   int64        `json:"timestamp"`
	BPF         healthBPF    `json:"bpf"`
	Subsystems  *Subsystems  `json:"subsystems,omitempty"`
}

type readiness struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitempty"`
}

type healthConfig struct {
	Version      uint8       `json:"version"`
	RegistryHash config.Hash `json:"registryHash"`
	Uptime       float64     `json:"uptime"`
}

type healthConns struct {
	WebSocket int     `json:"websocket"`
	Uptime    float64 `json:"uptime"`
}

type healthBPF struct {
	Mode       string   `json:"mode"`
	Interfaces []string `json:"interfaces"`
	Reason     string   `json:"reason,omitempty"` // why userspace
	Notes      []string `json:"notes,omitempty"`  // fallbacks in force
}

// APIConfig is the body of GET /api/config.
type apiConfig struct {
	config.State
	Dump string `json:"dump"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
