// Package admin serves the agent's admin listener: /health, /readyz,
// /metrics and /api/config (INTERFACE.md). It never serves proxy traffic.
package admin

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
)

// Status is what the admin endpoints report about the running agent.
type Status interface {
	State() codec.State
	WebSocketClients() int
	BPFMode() string   // "kernel" or "userspace"
	BPFReason() string // why userspace, in plain words
	BPFNotes() []string
	Interfaces() []string
	Ready() bool
}

// Handler returns the admin mux. reg is the registry /metrics exposes.
func Handler(st Status, reg *prometheus.Registry, started time.Time) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		up := time.Since(started).Seconds()
		s := st.State()
		ifaces := st.Interfaces()
		if ifaces == nil {
			ifaces = []string{}
		}
		writeJSON(w, http.StatusOK, health{
			Status:      "healthy",
			Config:      healthConfig{Version: s.Version, RegistryHash: config.Hash(s.RegistryHash), Uptime: up},
			Connections: healthConns{WebSocket: st.WebSocketClients(), Uptime: up},
			Timestamp:   time.Now().UnixMilli(),
			BPF:         healthBPF{Mode: st.BPFMode(), Interfaces: ifaces, Reason: st.BPFReason(), Notes: st.BPFNotes()},
		})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !st.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("GET /api/config", func(w http.ResponseWriter, r *http.Request) {
		s := st.State()
		writeJSON(w, http.StatusOK, apiConfig{State: config.FromCodec(s), Dump: s.Dump()})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

type health struct {
	Status      string       `json:"status"`
	Config      healthConfig `json:"config"`
	Connections healthConns  `json:"connections"`
	Timestamp   int64        `json:"timestamp"`
	BPF         healthBPF    `json:"bpf"`
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
