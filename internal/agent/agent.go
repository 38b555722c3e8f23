// Package agent runs the regedge agent: it owns the config state (through
// internal/state), attaches the kernel datapath (per agent.bpf) and starts
// the listeners of docs/architecture.md: the admin listener (/health, /readyz,
// /metrics, /api/config), the registry proxy, the WebSocket config server
// and the UDP config bus.
package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/configbus"
	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/fleet"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/logging"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/token"
	"github.com/regedge/regedge/internal/userproxy"
	"github.com/regedge/regedge/internal/wsconfig"
)

// proxyIdleTimeout is how long a kept-alive proxy connection, or an idle
// CONNECT tunnel, waits for its next byte.
const proxyIdleTimeout = 2 * time.Minute

// ErrBPFRequired is returned by New when agent.bpf is "required" and the
// kernel datapath cannot be attached.
var ErrBPFRequired = errors.New("agent: agent.bpf is \"required\" but the kernel datapath is not available")

// Agent is one running agent.
type Agent struct {
	cfg     *config.Config
	log     *slog.Logger
	started time.Time
	store   *state.Store

	ready     atomic.Bool
	bpfMode   string
	bpfReason string   // why the mode is userspace, in plain words
	bpfNotes  []string // fallbacks in force
	dp        *loader.Datapath
	adminLn   net.Listener
	wsLn      net.Listener
	ws        *wsconfig.Server
	proxyLn   net.Listener
	proxy     *userproxy.Proxy
	certs     *userproxy.CertReloader // proxy.tls, reloaded on SIGHUP
	proxyOnly bool                    // regedge proxy start
	cache     *edgecache.Cache
	busConn   *net.UDPConn
	busKeys   []ed25519.PublicKey // bus.publicKeys: only signed datagrams change state
	registry  *prometheus.Registry
	authorize func(*http.Request) error   // admin tokens, when tokens.publicKeys is set
	accessLog io.Writer                   // WithAccessLog
	output    *logging.Output             // WithOutput: level, dropped lines, recent lines
	selfProbe selfProbe                   // the proxy asked through its own listener
	unknown   prometheus.Gauge            // regedge_config_unknown_keys
	fileState atomic.Pointer[codec.State] // the config file's config section, as last loaded
	version   string                      // WithBuildInfo
	commit    string
	// fleet: revalidation hints to and from the other edges (fleet.*);
	// nil when there is nothing to send or receive.
	fleet         *fleet.Fleet
	fleetLocal    *fleet.LocalAddrs
	fleetResolver fleet.Resolver // WithFleetResolver
}

// Option adjusts an agent being built.
type Option func(*Agent)

// WithAccessLog sends the proxy's access lines to w (safe for concurrent
// use; one Write per line) through the proxy's own encoder instead of the
// logger: the same JSON lines for a fraction of the CPU. w should be where
// the logger writes.
func WithAccessLog(w io.Writer) Option { return func(a *Agent) { a.accessLog = w } }

// WithOutput is the agent's logging (the logger given to New should be
// out.Logger): access lines go to its sink, a reload changes its level,
// regedge_log_dropped_total is exported and sysdump reads its recent
// lines.
func WithOutput(out *logging.Output) Option {
	return func(a *Agent) { a.output, a.accessLog = out, out.Sink }
}

// WithFleetResolver looks dns: peers of fleet.peers up with r instead of
// the system's resolver.
func WithFleetResolver(r fleet.Resolver) Option { return func(a *Agent) { a.fleetResolver = r } }

// New checks cfg, attaches the kernel datapath per agent.bpf and restores
// the state; nothing listens until Listen.
func New(cfg *config.Config, log *slog.Logger, opts ...Option) (*Agent, error) {
	return newAgent(cfg, log, false, opts)
}

func newAgent(cfg *config.Config, log *slog.Logger, proxyOnly bool, opts []Option) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, registry: prometheus.NewRegistry(), proxyOnly: proxyOnly}
	for _, o := range opts {
		o(a)
	}
	if a.output != nil {
		a.registry.MustRegister(a.output.Collectors()...)
	} else {
		// The caller's logger is not bounded by us: nothing is dropped
		// here, and the series exists for the rules all the same.
		a.registry.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regedge_log_dropped_total", Help: "Log and access lines dropped because the log reader was slower than the lines (none without the agent's own log sink).",
		}))
	}
	a.unknown = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "regedge_config_unknown_keys",
		Help: "Keys of the config file this build does not know, ignored at the last load (start or SIGHUP): a newer config on an older agent.",
	})
	a.registry.MustRegister(a.unknown)
	if !proxyOnly {
		// Before anything is attached: a key file that does not parse
		// stops the agent, naming the file.
		keys, err := cfg.BusPublicKeys()
		if err != nil {
			return nil, err
		}
		a.busKeys = keys
	}
	if err := a.openDatapath(); err != nil {
		return nil, err
	}
	// The kernel keeps no copy of the state: it accounts connections by
	// the hash the proxy gives each socket (userproxy Config.Kernel).
	store, err := state.Open(state.Options{
		Initial:  cfg.State(),
		Versions: codec.NewVersionSet(cfg.Config.Version),
		File:     cfg.Agent.StateFile,
		Source:   state.StateSource(cfg.Agent.StateSource),
		Log:      log,
	})
	if err != nil {
		return nil, errors.Join(err, a.closeDatapath())
	}
	a.store = store
	fs := cfg.State()
	a.fileState.Store(&fs)
	if len(cfg.Tokens.PublicKeys) > 0 {
		v, err := token.NewVerifier(cfg.Tokens.PublicKeys, time.Duration(cfg.Tokens.Leeway)*time.Second)
		if err != nil {
			return nil, errors.Join(err, a.closeDatapath())
		}
		a.authorize = admin.TokenAuthorizer(v)
	}
	a.ws = wsconfig.New(store, wsconfig.Options{
		HeartbeatInterval: cfg.WebSocket.HeartbeatInterval.Duration(),
		ClientTimeout:     cfg.WebSocket.ClientTimeout.Duration(),
		Authorize:         a.authorize,
		LoopbackHosts:     cfg.Admin.LoopbackHosts,
		MaxClients:        cfg.WebSocket.MaxClients,
		MaxClientsPerIP:   cfg.WebSocket.MaxClientsPerIP,
	}, log)
	a.registry.MustRegister(a.ws.Collectors()...)
	if err := a.newProxy(); err != nil {
		return nil, errors.Join(err, a.closeDatapath())
	}
	if a.dp != nil {
		// The kernel's registry series fold as the proxy's: the hashes
		// the config knows, else "other".
		a.registry.MustRegister(loader.NewCollector(a.dp.Objects, a.proxy.RegistryLabel))
		// Bus datagrams are counted by registry only for these.
		if err := a.dp.Objects.KnowRegistries(a.proxy.KnownRegistries()); err != nil {
			log.Warn("the kernel will count bus datagrams of the configured registries as plain passes", "err", err)
		}
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
	a.registry.MustRegister(a.fleetCollectors()...)
	a.registry.MustRegister(mode, store.Collector(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return a, nil
}

// newProxy builds the registry proxy from proxy.* and tokens.*.
func (a *Agent) newProxy() error {
	cfg := a.cfg
	pc := userproxy.Config{
		AccessLog:    a.accessLog,
		AccessSample: cfg.AccessSample(),
		Scopes:       map[string]uint32{},
		PerMinute:    cfg.Proxy.RateLimit.PerMinute,
		// PerClientPerMinute 0 (off) is passed as it is.
		PerClientPerMinute: cfg.Proxy.RateLimit.PerClientPerMinute,
		Timeout:            cfg.Proxy.Timeout.Duration(),
		BodyTimeout:        cfg.Proxy.BodyTimeout.Duration(),
		PublicURL:          cfg.Proxy.PublicURL,
		Versions:           codec.NewVersionSet(cfg.Config.Version),
		// 0 in the file turns these off; 0 here would mean the defaults.
		BreakerFailures: cfg.Proxy.Breaker.Failures,
		BreakerCooldown: cfg.Proxy.Breaker.Cooldown.Duration(),
		RetryRatio:      cfg.Proxy.RetryRatio,
		// Listen makes the fleet; writes come only once Serve runs.
		OnPackageChanged: func(pkg string) {
			if a.fleet != nil {
				a.fleet.Notify(pkg)
			}
		},
		AnonymousRead: cfg.Tokens.AnonymousRead,
		// 0 (off) is passed as it is.
		MaxConnections:      cfg.Proxy.MaxConnections,
		MaxConnectionsPerIP: cfg.Proxy.MaxConnectionsPerIP,
		TunnelIdle:          proxyIdleTimeout,
	}
	if cfg.Proxy.Audit != nil {
		h := uint32(*cfg.Proxy.Audit)
		pc.Audit = &h
	}
	if pc.BreakerFailures == 0 {
		pc.BreakerFailures = -1
	}
	if pc.RetryRatio == 0 {
		pc.RetryRatio = -1
	}
	for scope, h := range cfg.Proxy.Scopes {
		pc.Scopes[strings.ToLower(scope)] = uint32(h)
	}
	for _, u := range cfg.Proxy.Upstreams {
		scheme := "http"
		if u.TLS {
			scheme = "https"
		}
		up := userproxy.Upstream{
			Hash: uint32(u.Hash), URL: &url.URL{Scheme: scheme, Host: net.JoinHostPort(u.Host, fmt.Sprint(u.Port))},
			Timeout: u.Timeout.Duration(),
		}
		for _, th := range u.TarballHosts {
			tu, _ := url.Parse(th) // Validate has checked it
			up.TarballHosts = append(up.TarballHosts, tu)
		}
		if u.Auth != nil {
			b, err := os.ReadFile(u.Auth.TokenFile)
			if err != nil {
				return fmt.Errorf("agent: upstream %s credential: %w", u.Host, err)
			}
			up.AuthToken = strings.TrimSpace(string(b))
		}
		pc.Upstreams = append(pc.Upstreams, up)
	}
	if len(cfg.Tokens.PublicKeys) > 0 {
		v, err := token.NewVerifier(cfg.Tokens.PublicKeys, time.Duration(cfg.Tokens.Leeway)*time.Second)
		if err != nil {
			return err
		}
		pc.Tokens = v
	}
	if a.dp != nil {
		pc.Kernel = a.dp.Objects
		tf := cfg.Proxy.TokenFailures
		pc.Blocker, pc.BlockAfter = a.dp.Objects, tf.Threshold
		pc.BlockWindow = tf.Window.Duration()
		pc.BlockTTL = tf.BlockTTL.Duration()
	}
	for _, tp := range cfg.Proxy.TrustedProxies {
		pr, _ := netip.ParsePrefix(tp) // Validate has checked it
		pc.TrustedProxies = append(pc.TrustedProxies, pr)
	}
	// A load balancer carries every client's failures, a bus source is an
	// operator's: neither is ever blocked.
	pc.BlockExempt = append(append([]netip.Prefix(nil), pc.TrustedProxies...), cfg.AllowPrefixes()...)
	if cc := cfg.Proxy.Cache; cc.Dir != "" {
		c, err := edgecache.Open(cc.Dir, cc.MaxBytes, edgecache.Options{Log: a.log})
		if err != nil {
			return err
		}
		pc.Cache = c
		pc.PackumentTTL = cc.PackumentTTL.Duration()
		pc.StaleIfError = cc.StaleIfError.Duration()
		pc.NegativeTTL = cc.NegativeTTL.Duration()
		a.cache = c
		a.registry.MustRegister(c.Collectors()...)
	}
	p, err := userproxy.New(pc, a.store, a.log)
	if err != nil {
		return err
	}
	if cfg.Proxy.TLS.Cert != "" {
		if a.certs, err = userproxy.NewCertReloader(cfg.Proxy.TLS.Cert, cfg.Proxy.TLS.Key); err != nil {
			return err
		}
	}
	a.proxy = p
	a.registry.MustRegister(p.Collectors()...)
	return nil
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
	// The settings go in before the programs are attached or swapped in:
	// a restart never runs the programs with a half-written config.
	dp, err := loader.Open(loader.Config{
		Options: opts, BPFFS: cfg.Agent.BPFFS, Interfaces: cfg.Agent.Interfaces,
		XDPGeneric: cfg.Agent.XDPMode == "generic",
		Settings: &loader.Settings{Versions: codec.NewVersionSet(cfg.Config.Version), Allow: cfg.AllowPrefixes(),
			RequireSigned: len(a.busKeys) > 0},
		SkLookup: cfg.Agent.SkLookup,
		LocalAddrError: func(err error) {
			a.log.Warn("kernel datapath: the node's address list", "err", err)
		},
	})
	if err == nil && cfg.Agent.SkLookup {
		if err = dp.SetSteering(a.steering()); err != nil {
			err = errors.Join(err, dp.Close())
		}
	}
	if err != nil {
		a.bpfReason = loader.Explain(err) // one line, for /health and the log
		if vlog := loader.VerifierLog(err); vlog != "" {
			a.log.Debug("kernel datapath: the verifier's log", "err", err.Error(), "log", vlog)
		}
		if cfg.Agent.BPF == "required" {
			return fmt.Errorf("%w: %s", ErrBPFRequired, a.bpfReason)
		}
		return nil
	}
	a.dp, a.bpfMode, a.bpfReason, a.bpfNotes = dp, "kernel", "", dp.Notes
	if cfg.Proxy.TokenFailures.Threshold == 0 {
		a.clearBlockList()
	}
	return nil
}

// steering is what sk_lookup sends to this agent's sockets: everything its
// listeners are bound to (a listener on port 0 cannot be steered).
func (a *Agent) steering() []loader.Destination {
	cfg := a.cfg
	var out []loader.Destination
	for _, s := range []struct {
		svc  loader.Service
		host string
		port int
		udp  bool
	}{
		{loader.ServiceProxy, cfg.Proxy.ListenHost, cfg.Proxy.ListenPort, false},
		{loader.ServiceWebSocket, cfg.WebSocket.Hostname, cfg.WebSocket.Port, false},
		{loader.ServiceBus, busSteerHost(cfg.Bus.ListenHost), cfg.Bus.Port, true},
	} {
		if s.port == 0 || (a.proxyOnly && s.svc != loader.ServiceProxy) {
			continue
		}
		ds, err := loader.SteerFor(s.svc, s.host, uint16(s.port), s.udp)
		if err != nil {
			a.log.Warn("not steered", "service", s.svc.String(), "err", err)
			continue
		}
		out = append(out, ds...)
	}
	return out
}

// busSteerHost is the host the bus is steered for: its default binding
// (0.0.0.0 or ::) is one dual-stack socket (busNetwork), so every address.
func busSteerHost(host string) string {
	if host == "0.0.0.0" || host == "::" {
		return ""
	}
	return host
}

// steered reports whether sk_lookup hands this agent's sockets over: the
// datapath is attached with agent.skLookup.
func (a *Agent) steered() bool { return a.dp != nil && a.cfg.Agent.SkLookup }

// registerSockets puts this agent's listening sockets into the SOCKMAP:
// from now on new connections (and bus datagrams) come here, and an agent
// that ran before drains.
func (a *Agent) registerSockets() error {
	if !a.steered() {
		return nil
	}
	socks := []struct {
		svc loader.Service
		c   any
	}{{loader.ServiceProxy, a.proxyLn}, {loader.ServiceWebSocket, a.wsLn}, {loader.ServiceBus, a.busConn}}
	for _, s := range socks {
		sc, ok := s.c.(syscall.Conn)
		if !ok || sc == nil || reflect.ValueOf(sc).IsNil() {
			continue
		}
		if err := a.dp.RegisterSocket(s.svc, sc); err != nil {
			return err
		}
	}
	return nil
}

// handOver runs when the agent is told to stop, before it stops accepting.
// When another agent has taken the programs over (a rollout), it waits for
// that agent to register its sockets (the orchestrator may stop this one as
// soon as the next answers /readyz, before it has), then lets the accept
// queues empty: connections steered here before the switch are served, not
// reset. Without a successor it returns at once: a plain stop.
func (a *Agent) handOver(limit time.Duration) {
	if !a.steered() {
		return
	}
	ln, ok := a.proxyLn.(syscall.Conn)
	if !ok {
		return
	}
	deadline := time.Now().Add(limit)
	for {
		mine, err := a.dp.Registered(loader.ServiceProxy, ln)
		if err != nil {
			a.log.Warn("handover: cannot read the registered socket", "err", err)
			return
		}
		if !mine {
			break
		}
		superseded, err := a.dp.Superseded()
		if err != nil || !superseded {
			return // nobody to hand over to
		}
		if time.Now().After(deadline) {
			a.log.Warn("handover: the next agent took the programs over but registered no socket in time; stopping anyway")
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.log.Info("handover: the next agent holds the sockets; draining what was queued here")
	for _, l := range []net.Listener{a.proxyLn, a.wsLn} {
		if l != nil {
			waitAcceptQueueEmpty(l, time.Second)
		}
	}
}

func (a *Agent) closeDatapath() error {
	if a.dp == nil {
		return nil
	}
	// Pins stay: the programs keep judging packets until the next agent.
	err := a.dp.Close()
	a.dp = nil
	return err
}

// Store returns the agent's config state store.
func (a *Agent) Store() *state.Store { return a.store }

// BPFReason says why the agent runs in userspace mode ("" in kernel mode).
func (a *Agent) BPFReason() string { return a.bpfReason }

// BPFNotes lists the fallbacks in force in kernel mode.
func (a *Agent) BPFNotes() []string { return a.bpfNotes }

// State returns the current config state.
func (a *Agent) State() codec.State { return a.store.State() }

// SetState replaces the state (admin API, CLI).
func (a *Agent) SetState(s codec.State) (codec.State, error) { return a.store.Set(s, state.SourceCLI) }

// Reload applies a re-read config file (SIGHUP): the proxy's TLS
// certificate is re-read and the file's state becomes the agent's, through
// the same path as every other change (source "file").
// Listeners, interfaces and the other settings take effect on restart.
func (a *Agent) Reload(c *config.Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if a.certs != nil {
		// A bad certificate refuses the whole reload: nothing changes.
		if err := a.certs.Reload(); err != nil {
			return err
		}
	}
	// The log's level and access lines change at once: turning access
	// lines off (or sampling them) needs no restart.
	if a.output != nil {
		a.output.Level.Set(c.LogLevel())
	}
	a.proxy.SetAccessSample(c.AccessSample())
	s, err := a.store.Set(c.State(), state.SourceFile)
	if err != nil {
		return err
	}
	fs := c.State()
	a.fileState.Store(&fs)
	a.log.Info("config reloaded", "state", s.Dump(), "note", "listeners, interfaces and limits change on restart")
	return nil
}

// PurgeCache drops the cached packuments and tarballs of a package (or of
// one version) and returns how many entries went.
func (a *Agent) PurgeCache(pkg, version string) (int, error) {
	if a.cache == nil {
		return 0, errors.New("the edge cache is off (proxy.cache.dir)")
	}
	return a.cache.PurgeKeys(userproxy.PurgeKeys(pkg, version)), nil
}

// WebSocketClients is the number of connected config clients.
func (a *Agent) WebSocketClients() int { return a.ws.Clients() }

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

// AdminAddr is the admin listener's address once Listen has bound it.
func (a *Agent) AdminAddr() net.Addr {
	if a.adminLn == nil {
		return nil
	}
	return a.adminLn.Addr()
}

// WebSocketAddr is the WebSocket listener's address once Listen has bound it.
func (a *Agent) WebSocketAddr() net.Addr {
	if a.wsLn == nil {
		return nil
	}
	return a.wsLn.Addr()
}

// NewProxyOnly is New for `regedge proxy start`: the proxy and the admin
// listener, without BPF, the WebSocket server or the config bus.
func NewProxyOnly(cfg *config.Config, log *slog.Logger, opts ...Option) (*Agent, error) {
	c := *cfg
	c.Agent.BPF = "off"
	return newAgent(&c, log, true, opts)
}

// ProxyAddr is the proxy listener's address once Listen has bound it.
func (a *Agent) ProxyAddr() net.Addr {
	if a.proxyLn == nil {
		return nil
	}
	return a.proxyLn.Addr()
}

// BusAddr is the config bus socket's address once Listen has bound it.
func (a *Agent) BusAddr() net.Addr {
	if a.busConn == nil {
		return nil
	}
	return a.busConn.LocalAddr()
}

// busAddr is where the bus binds: bus.listenHost (an IP literal, checked
// by Validate) and bus.port.
func (a *Agent) busAddr() netip.AddrPort {
	host, _ := netip.ParseAddr(a.cfg.Bus.ListenHost)
	return netip.AddrPortFrom(host.Unmap(), uint16(a.cfg.Bus.Port))
}

// busNetwork keeps the default, 0.0.0.0, binding IPv4 and IPv6 (one
// dual-stack socket, as before bus.listenHost existed); any other address
// binds that address alone.
func busNetwork(host string) string {
	if host == "0.0.0.0" || host == "::" {
		return "udp"
	}
	if a, _ := netip.ParseAddr(host); a.Unmap().Is4() {
		return "udp4"
	}
	return "udp6"
}

// Listen binds the listeners; Serve then serves them. Split so that callers
// (and tests, inside a network namespace) bind before serving starts.
func (a *Agent) Listen() error {
	var opened []io.Closer
	fail := func(err error) error {
		for _, c := range opened {
			c.Close()
		}
		return err
	}
	// Plain TCP, not Go's default MPTCP: sk_lookup's SOCKMAP can hold it.
	// With steering, every port is bound with SO_REUSEPORT: the next agent
	// binds them while this one runs, and takes the steered ones over.
	lc := loader.ListenConfig()
	if a.steered() {
		lc.Control = reusePort
	}
	ctx := context.Background()
	ln, err := lc.Listen(ctx, "tcp", a.cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("agent: admin listener: %w", err)
	}
	opened = append(opened, ln)
	if !a.proxyOnly {
		wsAddr := net.JoinHostPort(a.cfg.WebSocket.Hostname, fmt.Sprint(a.cfg.WebSocket.Port))
		wsLn, err := lc.Listen(ctx, "tcp", wsAddr)
		if err != nil {
			return fail(fmt.Errorf("agent: WebSocket listener on %s: %w", wsAddr, err))
		}
		opened = append(opened, wsLn)
		pc, err := lc.ListenPacket(ctx, busNetwork(a.cfg.Bus.ListenHost), a.busAddr().String())
		if err != nil {
			return fail(fmt.Errorf("agent: config bus on %s: %w", a.busAddr(), err))
		}
		bus := pc.(*net.UDPConn)
		opened = append(opened, bus)
		_ = bus.SetReadBuffer(4 << 20)
		a.wsLn, a.busConn = wsLn, bus
	}
	if err := a.listenFleet(); err != nil {
		return fail(err)
	}
	proxyAddr := net.JoinHostPort(a.cfg.Proxy.ListenHost, fmt.Sprint(a.cfg.Proxy.ListenPort))
	proxyLn, err := lc.Listen(ctx, "tcp", proxyAddr)
	if err != nil {
		a.closeFleet()
		return fail(fmt.Errorf("agent: proxy listener on %s: %w", proxyAddr, err))
	}
	a.adminLn, a.proxyLn = ln, proxyLn
	return nil
}

// listenFleet opens the hint socket on fleet.listen when there is
// something to do: a cache to keep coherent or peers to tell. With
// fleet.listen empty, hints leave from a port of the system's choice and
// none are received. Called in the agent's network namespace: the socket
// and the netlink socket that lists this host's addresses stay in it.
func (a *Agent) listenFleet() error {
	fc := a.cfg.Fleet
	if a.cache == nil && len(fc.Peers) == 0 {
		return nil
	}
	if fc.Listen == "" && len(fc.Peers) == 0 {
		return nil
	}
	peers, err := fleet.ParsePeers(fc.Peers) // Validate has checked them
	if err != nil {
		return fmt.Errorf("agent: fleet.peers%w", err)
	}
	listen := fc.Listen
	if listen == "" {
		listen = "0.0.0.0:0"
	}
	ap, err := fleet.ParseListen(listen)
	if err != nil {
		return fmt.Errorf("agent: fleet.listen: %w", err)
	}
	conn, err := net.ListenUDP(fleet.ListenNetwork(ap.Addr()), net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("agent: fleet hints on %s: %w", listen, err)
	}
	opts := fleet.Options{
		Peers: peers, ResolveInterval: time.Duration(fc.ResolveInterval) * time.Millisecond,
		Resolver: a.fleetResolver, Receive: fc.Listen != "", Log: a.log,
	}
	if local, err := fleet.NewLocalAddrs(); err != nil {
		a.log.Warn("fleet: this host's addresses cannot be listed; only the socket's own address and loopback count as this edge", "err", err)
	} else {
		a.fleetLocal, opts.LocalAddrs = local, local.List
	}
	if a.cache != nil {
		c := a.cache
		opts.Mark = func(pkgs []string) int { return c.MarkStale(userproxy.PackumentKeysOf(pkgs)) }
	}
	a.fleet = fleet.New(conn, opts)
	a.registry.MustRegister(a.fleet.Collectors()...)
	return nil
}

func (a *Agent) closeFleet() {
	if a.fleet == nil {
		return
	}
	for _, c := range a.fleet.Collectors() {
		a.registry.Unregister(c)
	}
	_ = a.fleet.Close() // its socket: nothing was written that could be lost
	if a.fleetLocal != nil {
		a.fleetLocal.Close()
	}
	a.fleet, a.fleetLocal = nil, nil
}

// FleetAddr is the hint socket's address (nil without one).
func (a *Agent) FleetAddr() net.Addr {
	if a.fleet == nil {
		return nil
	}
	return net.UDPAddrFromAddrPort(a.fleet.Addr())
}

// FleetPeers are the addresses hints go to now (this edge left out).
func (a *Agent) FleetPeers() []netip.AddrPort {
	if a.fleet == nil {
		return nil
	}
	return a.fleet.Peers()
}

// Serve serves until ctx is done, then shuts down gracefully.
func (a *Agent) Serve(ctx context.Context) error {
	a.started = time.Now()
	srv := &http.Server{
		Handler:           admin.Handler(a, a.registry, a.started, a.authorize, admin.Options{Pprof: a.cfg.Admin.Pprof, LoopbackHosts: a.cfg.Admin.LoopbackHosts}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	proxySrv := &http.Server{
		Handler:           a.proxy,
		ReadHeaderTimeout: a.cfg.Proxy.HeaderTimeout.Duration(), // slowloris clients are cut off
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       proxyIdleTimeout,
		ConnContext:       userproxy.ConnContext, // per-connection state: the socket the kernel accounts
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 8)
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	var wg sync.WaitGroup
	run := func(f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- f() }()
	}
	if a.cache != nil {
		// The cache's upkeep: a scrubber re-hashes files at a bounded
		// rate, and expired negative answers leave.
		cc := a.cfg.Proxy.Cache
		wg.Add(1)
		go func() {
			defer wg.Done()
			if cc.ScrubRate > 0 {
				go a.cache.RunScrubber(serveCtx, cc.ScrubRate, time.Hour)
			}
			t := time.NewTicker(time.Minute)
			defer t.Stop()
			for {
				select {
				case <-serveCtx.Done():
					return
				case <-t.C:
					a.cache.EvictExpired(cc.NegativeTTL.Duration())
				}
			}
		}()
	}
	// The fast front end (TLS too, with proxy.tls), which hands what it
	// does not serve (and HTTP/2) to proxySrv; with proxy.fastPath off,
	// proxySrv alone.
	var tlsConf *tls.Config
	if a.certs != nil {
		tlsConf = a.certs.TLSConfig()
	}
	serveProxy, shutdownProxy := func() error {
		ln := a.proxy.CapListener(a.proxyLn, tlsConf) // the fast front end applies the caps itself
		if tlsConf != nil {
			proxySrv.TLSConfig = tlsConf
			return proxySrv.ServeTLS(ln, "", "")
		}
		return proxySrv.Serve(ln)
	}, proxySrv.Shutdown
	if a.cfg.Proxy.FastPath {
		fast := &userproxy.Server{Proxy: a.proxy, Fallback: proxySrv, TLSConfig: tlsConf,
			HeaderTimeout: proxySrv.ReadHeaderTimeout, IdleTimeout: proxySrv.IdleTimeout}
		serveProxy, shutdownProxy = func() error { return fast.Serve(a.proxyLn) }, fast.Shutdown
	}
	run(serveProxy)
	run(func() error { return srv.Serve(a.adminLn) })
	// Upstream probes: an open breaker recovers without clients, an idle
	// upstream that went away is noticed.
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.proxy.RunProbes(serveCtx, time.Duration(a.cfg.Proxy.Breaker.ProbeInterval)*time.Millisecond)
	}()
	var wsSrv *http.Server
	if !a.proxyOnly {
		wsSrv = &http.Server{Handler: a.ws, ReadHeaderTimeout: 5 * time.Second}
		bus := configbus.NewServer(a.busConn, a.store, configbus.Options{
			Allow: a.cfg.AllowPrefixes(), PublicKeys: a.busKeys,
		}, a.log)
		for _, c := range bus.Collectors() {
			a.registry.MustRegister(c)
			defer a.registry.Unregister(c)
		}
		run(func() error { return wsSrv.Serve(a.wsLn) })
		run(func() error { a.ws.Run(serveCtx); return nil })
		run(func() error { return bus.Serve(serveCtx) })
	}
	if a.fleet != nil {
		run(func() error {
			err := a.fleet.Run(serveCtx)
			if a.fleetLocal != nil {
				a.fleetLocal.Close()
			}
			return err
		})
	}
	a.log.Info("agent started",
		"admin", a.adminLn.Addr().String(),
		"proxy", a.proxyLn.Addr().String(),
		"websocket", a.WebSocketAddr(),
		"bus", a.BusAddr(),
		"bus_signed", len(a.busKeys) > 0,
		"fleet", a.FleetAddr(),
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
	// Serving: take the steered connections (an agent before this one
	// drains from now on).
	var runErr error
	if err := a.registerSockets(); err != nil {
		runErr = fmt.Errorf("agent: %w", err)
	} else {
		a.ready.Store(true)
		select {
		case <-ctx.Done():
		case err := <-errc:
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				runErr = fmt.Errorf("agent: listener stopped: %w", err)
			}
		}
	}
	a.ready.Store(false)
	grace := time.Duration(a.cfg.Proxy.Grace) * time.Millisecond
	a.handOver(min(grace/2, 10*time.Second))
	stopServing()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// In-flight proxy requests finish (up to the grace period) before exit;
	// what is left then is cut, logged and counted. A shutdown that was
	// asked for is not a failure: running out of grace is not an error.
	graceOver := func(err error) error {
		if errors.Is(err, context.DeadlineExceeded) {
			a.log.Warn("shutdown grace ran out: cut the connections still busy", "grace_ms", a.cfg.Proxy.Grace)
			return nil
		}
		return err
	}
	err := errors.Join(graceOver(shutdownProxy(shutdownCtx)), graceOver(srv.Shutdown(shutdownCtx)))
	if wsSrv != nil {
		err = errors.Join(err, graceOver(wsSrv.Shutdown(shutdownCtx)))
		a.busConn.Close()
	}
	wg.Wait()
	err = errors.Join(runErr, err, a.closeDatapath())
	a.log.Info("agent stopped")
	return err
}
