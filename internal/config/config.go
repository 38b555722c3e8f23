// Package config reads the agent's configuration: the embedded defaults, then
// a JSON file (unknown keys are errors), then environment variables, each
// layer overriding the one before (docs/configuration.md). Every error names the key or
// the variable that is wrong; a Config that Load returns has passed Validate.
package config

import (
	"bytes"
	"crypto/ed25519"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/fleet"
	"github.com/regedge/regedge/internal/logging"
	"github.com/regedge/regedge/internal/token"
)

//go:embed default.json
var defaultJSON []byte

// DefaultJSON returns the embedded default configuration file.
func DefaultJSON() []byte { return append([]byte(nil), defaultJSON...) }

// Config is the whole configuration file.
type Config struct {
	Config    State     `json:"config"`
	Proxy     Proxy     `json:"proxy"`
	WebSocket WebSocket `json:"websocket"`
	Bus       Bus       `json:"bus"`
	Tokens    Tokens    `json:"tokens"`
	Agent     Agent     `json:"agent"`
	Admin     Admin     `json:"admin"`
	Log       Log       `json:"log"`
	Fleet     Fleet     `json:"fleet"`
}

// Log is the "log" section.
type Log struct {
	Level  string `json:"level"`  // debug, info, warn, error
	Access string `json:"access"` // on, off, sample:N (one request in N)
}

// State is the 13-byte state as the config file writes it.
type State struct {
	Version      uint8 `json:"version"`
	RegistryHash Hash  `json:"registryHash"`
	FeatureFlags Flags `json:"featureFlags"`
	TerminalMode uint8 `json:"terminalMode"`
	Rows         uint8 `json:"rows"`
	Cols         uint8 `json:"cols"`
	Reserved     uint8 `json:"reserved"`
}

// Codec returns the state in codec form (not yet validated).
func (s State) Codec() codec.State {
	return codec.State{
		Version: s.Version, RegistryHash: uint32(s.RegistryHash), FeatureFlags: uint32(s.FeatureFlags),
		TerminalMode: s.TerminalMode, Rows: s.Rows, Cols: s.Cols, Reserved: s.Reserved,
	}
}

// FromCodec returns the config-file form of a codec state.
func FromCodec(s codec.State) State {
	return State{s.Version, Hash(s.RegistryHash), Flags(s.FeatureFlags), s.TerminalMode, s.Rows, s.Cols, s.Reserved}
}

// Hash is a u32 written as "0x" + hex digits or as a JSON number.
type Hash uint32

// UnmarshalJSON accepts "0x…" strings and numbers.
func (h *Hash) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseHash(s)
		if err != nil {
			return err
		}
		*h = v
		return nil
	}
	var n uint64
	if err := json.Unmarshal(b, &n); err != nil || n > 0xffffffff {
		return fmt.Errorf("want \"0x\" and up to 8 hex digits, or a number 0..4294967295, got %s", b)
	}
	*h = Hash(n)
	return nil
}

// MarshalJSON writes "0x%08x".
func (h Hash) MarshalJSON() ([]byte, error) { return json.Marshal(h.String()) }

func (h Hash) String() string { return fmt.Sprintf("0x%08x", uint32(h)) }

// ParseHash parses "0x" and 1..8 hex digits (either case), or a decimal number.
func ParseHash(s string) (Hash, error) {
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		v, err := strconv.ParseUint(s[2:], 16, 32)
		if err != nil || len(s) > 10 {
			return 0, fmt.Errorf("%q: want \"0x\" and up to 8 hex digits", s)
		}
		return Hash(v), nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q: want \"0x\" and up to 8 hex digits, or a decimal number", s)
	}
	return Hash(v), nil
}

// Flags is the feature flag word of the state (§1). It is written as a
// registry hash is, "0x" + hex digits or a JSON number, and is a type of its
// own because it is not a hash.
type Flags uint32

// UnmarshalJSON accepts "0x…" strings and numbers.
func (f *Flags) UnmarshalJSON(b []byte) error { return (*Hash)(f).UnmarshalJSON(b) }

// MarshalJSON writes "0x%08x".
func (f Flags) MarshalJSON() ([]byte, error) { return Hash(f).MarshalJSON() }

func (f Flags) String() string { return Hash(f).String() }

// Millis is a time in the config file: milliseconds, a JSON number, as in
// the seed's files. Duration gives it to the code that waits.
type Millis int64

// Duration is m milliseconds.
func (m Millis) Duration() time.Duration { return time.Duration(m) * time.Millisecond }

// Proxy is the "proxy" section.
type Proxy struct {
	ListenHost string          `json:"listenHost"`
	ListenPort int             `json:"listenPort"`
	Timeout    Millis          `json:"timeout"`
	Upstreams  []Upstream      `json:"upstreams"`
	Scopes     map[string]Hash `json:"scopes"`
	TLS        TLS             `json:"tls"`
	RateLimit  RateLimit       `json:"rateLimit"`
	// Sources with repeated token failures go into the XDP block list.
	TokenFailures TokenFailures `json:"tokenFailures"`
	// Only these may set X-Forwarded-Proto/Host.
	TrustedProxies []string `json:"trustedProxies"`
	// Per-upstream circuit breaker and the retry budget.
	Breaker    Breaker `json:"breaker"`
	RetryRatio float64 `json:"retryRatio"`
	// A client must send its request head within HeaderTimeout; Grace
	// is how long in-flight requests may run on at shutdown.
	HeaderTimeout Millis `json:"headerTimeout"`
	Grace         Millis `json:"grace"`
	// BodyTimeout is the longest silence between reads of an upstream
	// body, on both front ends and cache fills.
	BodyTimeout Millis `json:"bodyTimeout"`
	// PublicURL is the edge's base as clients see it (behind a load
	// balancer); tarball URLs are rebased onto it. "": from each
	// request's Host.
	PublicURL string `json:"publicURL"`
	// The edge cache of tarballs and packuments; off when Dir is empty.
	Cache Cache `json:"cache"`
	// FastPath serves GET/HEAD on the proxy's own HTTP/1.1 path (the
	// default); false serves everything with net/http, an escape hatch.
	FastPath bool `json:"fastPath"`
	// Audit is the registry hash of the upstream that serves
	// /-/npm/v1/security/* (npm audit); null: the request's own routing.
	Audit *Hash `json:"audit"`
	// MaxConnections and MaxConnectionsPerIP cap open client connections
	// (0 = off); a connection over a cap is answered 503 and closed.
	MaxConnections      int `json:"maxConnections"`
	MaxConnectionsPerIP int `json:"maxConnectionsPerIP"`
}

// Cache configures the edge cache.
type Cache struct {
	Dir          string `json:"dir"`
	MaxBytes     int64  `json:"maxBytes"`
	PackumentTTL Millis `json:"packumentTTL"`
	// ScrubRate bounds the background re-hashing of cached files, in
	// bytes per second (0: off).
	ScrubRate    int64  `json:"scrubRate"`
	StaleIfError Millis `json:"staleIfError"`
	NegativeTTL  Millis `json:"negativeTTL"`
}

// Breaker opens after Failures consecutive upstream failures for Cooldown,
// then lets one probe through. Failures 0 turns it off. An upstream that
// has served requests and then had no exchange for ProbeInterval is probed
// (GET /-/ping); 0 turns idle probes off.
type Breaker struct {
	Failures      int    `json:"failures"`
	Cooldown      Millis `json:"cooldown"`
	ProbeInterval Millis `json:"probeInterval"`
}

// TokenFailures: Threshold failures within Window block the source for
// BlockTTL. Threshold 0 turns it off.
type TokenFailures struct {
	Threshold int    `json:"threshold"`
	Window    Millis `json:"window"`
	BlockTTL  Millis `json:"blockTTL"`
}

// Upstream is one registry the proxy forwards to.
type Upstream struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	Hash Hash   `json:"hash"`
	TLS  bool   `json:"tls"`
	Auth *Auth  `json:"auth,omitempty"`
	// Timeout for this upstream's response headers; 0 = proxy.timeout.
	Timeout Millis `json:"timeout,omitempty"`
	// TarballHosts are more origins (scheme://host[:port][/path]) whose
	// tarball URLs count as this upstream's.
	TarballHosts []string `json:"tarballHosts,omitempty"`
}

// Auth is the credential the edge presents upstream.
type Auth struct {
	TokenFile string `json:"tokenFile"`
}

// TLS names the listener's certificate and key; both empty means plain HTTP.
type TLS struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// RateLimit: PerMinute is per registry hash, all clients together (a
// ceiling that protects the upstream); PerClientPerMinute is per client (the
// token's sub, else the source address), 0 = off. Both have a burst of one
// minute.
type RateLimit struct {
	PerMinute          int `json:"perMinute"`
	PerClientPerMinute int `json:"perClientPerMinute"`
}

// WebSocket is the "websocket" section.
type WebSocket struct {
	Hostname          string `json:"hostname"`
	Port              int    `json:"port"`
	HeartbeatInterval Millis `json:"heartbeatInterval"`
	ClientTimeout     Millis `json:"clientTimeout"`
	// MaxClients and MaxClientsPerIP cap connected clients (0 = off);
	// an upgrade over a cap is answered 503.
	MaxClients      int `json:"maxClients"`
	MaxClientsPerIP int `json:"maxClientsPerIP"`
}

// Bus is the "bus" section.
type Bus struct {
	// ListenHost is the address the bus socket binds: an IP address
	// literal ("0.0.0.0" binds every IPv4 and IPv6 address).
	ListenHost string   `json:"listenHost"`
	Port       int      `json:"port"`
	Allow      []string `json:"allow"`
	// PublicKeys are PKIX PEM Ed25519 key files (as tokens.publicKeys);
	// when set, only signed datagrams change state (docs/config-plane.md).
	PublicKeys []string `json:"publicKeys"`
}

// Tokens is the "tokens" section.
type Tokens struct {
	PublicKeys []string `json:"publicKeys"`
	Leeway     int      `json:"leeway"` // seconds
	// AnonymousRead lets reads (GET, HEAD, npm's audit POSTs) through the
	// proxy without a token; writes still need one with registry:write.
	AnonymousRead bool `json:"anonymousRead"`
}

// Agent is the "agent" section.
type Agent struct {
	BPF        string   `json:"bpf"` // auto, required, off
	Interfaces []string `json:"interfaces"`
	XDPMode    string   `json:"xdpMode"` // native, generic
	BPFFS      string   `json:"bpffs"`
	StateFile  string   `json:"stateFile"`
	// StateSource says which state wins at start: "file" (a persisted
	// state, logged) or "config" (this file's "config" section).
	StateSource string `json:"stateSource"`
	// SkLookup steers new connections to the proxy (and WebSocket) ports
	// and bus datagrams to the sockets this agent registered (sk_lookup),
	// so that a new agent takes them over while the old one drains. Only
	// with the kernel datapath attached.
	SkLookup bool `json:"skLookup"`
}

// Fleet is the "fleet" section: revalidation hints between the edges of a
// fleet (docs/proxy.md, "A fleet of edges").
type Fleet struct {
	// Listen is where hints arrive and leave from: IP:PORT, the IP a
	// literal; "" receives none. The socket is opened only when the cache
	// is on or Peers is set.
	Listen string `json:"listen"`
	// Peers are the other edges' fleet.listen addresses (IP:PORT) or
	// dns:NAME:PORT (every A and AAAA record of NAME), this edge's own
	// address left out.
	Peers []string `json:"peers"`
	// ResolveInterval is how often dns: peers are looked up again (ms).
	ResolveInterval int `json:"resolveInterval"`
}

// Admin is the "admin" section.
type Admin struct {
	Listen string `json:"listen"`
	// LoopbackHosts are Host names, besides localhost and loopback IP
	// literals, under which a request on a loopback address may change the
	// config without a token (admin API and WebSocket server).
	LoopbackHosts []string `json:"loopbackHosts"`
	// Pprof serves /debug/pprof/ on the admin listener.
	Pprof bool `json:"pprof"`
}

// Error is a configuration error naming where the bad value came from: a key
// path such as proxy.upstreams[1].hash, or an environment variable.
type Error struct {
	Source string // file name, "defaults" or "environment"
	Key    string
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("config: %s: %s: %v", e.Source, e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Default returns the embedded defaults.
func Default() *Config {
	c, err := decode(bytes.NewReader(defaultJSON), "defaults", &Config{})
	if err != nil {
		panic("config: embedded defaults do not decode: " + err.Error())
	}
	return c
}

// Load returns the embedded defaults, overridden by the file at path (when
// path is not empty), then by env (os.LookupEnv when nil), validated.
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	c := Default()
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		defer f.Close()
		if c, err = decode(f, path, c); err != nil {
			return nil, err
		}
	}
	if env == nil {
		env = os.LookupEnv
	}
	if err := applyEnv(c, env); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// decode reads a JSON file over base: keys present in the file replace base's.
func decode(r io.Reader, source string, base *Config) (*Config, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	c := *base
	c.Proxy.Upstreams = append([]Upstream(nil), base.Proxy.Upstreams...)
	if err := dec.Decode(&c); err != nil {
		key := "(file)"
		var ute *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &ute):
			key = ute.Field
		case errors.As(err, &se):
			key = fmt.Sprintf("offset %d", se.Offset)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			key = strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			err = errors.New("unknown key")
		}
		return nil, &Error{Source: source, Key: key, Err: err}
	}
	if dec.More() {
		return nil, &Error{Source: source, Key: "(file)", Err: errors.New("more than one JSON value")}
	}
	return &c, nil
}

// State returns the configured 13-byte state.
func (c *Config) State() codec.State { return c.Config.Codec() }

// Validate checks every value; the error names the first bad key.
func (c *Config) Validate() error {
	bad := func(key string, format string, a ...any) error {
		return &Error{Source: "config", Key: key, Err: fmt.Errorf(format, a...)}
	}
	if err := c.State().Validate(); err != nil {
		var ce *codec.Error
		if errors.As(err, &ce) {
			return bad("config."+ce.Field, "%s", ce.Detail)
		}
		return bad("config", "%v", err)
	}
	ports := []struct {
		key  string
		port int
	}{
		{"proxy.listenPort", c.Proxy.ListenPort}, {"websocket.port", c.WebSocket.Port}, {"bus.port", c.Bus.Port},
	}
	for _, p := range ports {
		if p.port < 0 || p.port > 65535 {
			return bad(p.key, "port %d outside 0..65535", p.port)
		}
	}
	if c.Proxy.Timeout <= 0 {
		return bad("proxy.timeout", "want milliseconds > 0, got %d", c.Proxy.Timeout)
	}
	seen := map[Hash]int{}
	for i, u := range c.Proxy.Upstreams {
		key := fmt.Sprintf("proxy.upstreams[%d]", i)
		if u.Host == "" {
			return bad(key+".host", "empty")
		}
		if u.Port <= 0 || u.Port > 65535 {
			return bad(key+".port", "port %d outside 1..65535", u.Port)
		}
		if j, dup := seen[u.Hash]; dup {
			return bad(key+".hash", "%s is also the hash of proxy.upstreams[%d]", u.Hash, j)
		}
		seen[u.Hash] = i
		if u.Timeout < 0 {
			return bad(key+".timeout", "want milliseconds >= 0")
		}
		if u.Auth != nil && u.Auth.TokenFile == "" {
			return bad(key+".auth.tokenFile", "empty")
		}
		if u.Auth != nil && len(c.Tokens.PublicKeys) == 0 {
			// Without tokens every client would read and write with the
			// edge's account at this upstream.
			return bad(key+".auth", "the edge would lend this credential to every client: "+
				"set tokens.publicKeys (tokens.anonymousRead keeps reads open, writes then need a registry:write token), or remove auth")
		}
	}
	if a := c.Proxy.Audit; a != nil {
		if _, ok := seen[*a]; !ok {
			return bad("proxy.audit", "%s is not the hash of one of proxy.upstreams", *a)
		}
	}
	for scope := range c.Proxy.Scopes {
		if len(scope) < 2 || scope[0] != '@' || strings.Contains(scope, "/") {
			return bad("proxy.scopes", "%q: want a scope such as @mycompany", scope)
		}
	}
	if (c.Proxy.TLS.Cert == "") != (c.Proxy.TLS.Key == "") {
		return bad("proxy.tls", "cert and key must both be set or both be empty")
	}
	if tf := c.Proxy.TokenFailures; tf.Threshold < 0 || (tf.Threshold > 0 && (tf.Window <= 0 || tf.BlockTTL <= 0)) {
		return bad("proxy.tokenFailures", "want threshold >= 0 and, when set, window and blockTTL > 0 (ms)")
	}
	if b := c.Proxy.Breaker; b.Failures < 0 || (b.Failures > 0 && b.Cooldown <= 0) || b.ProbeInterval < 0 {
		return bad("proxy.breaker", "want failures >= 0 and, when set, cooldown > 0 (ms); probeInterval >= 0 (ms)")
	}
	if cc := c.Proxy.Cache; cc.Dir != "" && (cc.MaxBytes <= 0 || cc.PackumentTTL < 0 || cc.StaleIfError < 0 || cc.NegativeTTL < 0) {
		return bad("proxy.cache", "want maxBytes > 0 and times >= 0 (ms)")
	}
	if c.Proxy.HeaderTimeout <= 0 || c.Proxy.Grace <= 0 {
		return bad("proxy.headerTimeout", "headerTimeout and grace must be milliseconds > 0")
	}
	if c.Proxy.BodyTimeout <= 0 {
		return bad("proxy.bodyTimeout", "want milliseconds > 0, got %d", c.Proxy.BodyTimeout)
	}
	if u := c.Proxy.PublicURL; u != "" {
		if err := checkOrigin(u); err != nil {
			return bad("proxy.publicURL", "%q: %v", u, err)
		}
	}
	for i, up := range c.Proxy.Upstreams {
		for j, th := range up.TarballHosts {
			if err := checkOrigin(th); err != nil {
				return bad(fmt.Sprintf("proxy.upstreams[%d].tarballHosts[%d]", i, j), "%q: %v", th, err)
			}
		}
	}
	if r := c.Proxy.RetryRatio; r < 0 || r > 1 {
		return bad("proxy.retryRatio", "want 0..1, got %v", r)
	}
	for i, tp := range c.Proxy.TrustedProxies {
		if _, err := netip.ParsePrefix(tp); err != nil {
			return bad(fmt.Sprintf("proxy.trustedProxies[%d]", i), "%q: want a CIDR prefix", tp)
		}
	}
	if c.Proxy.RateLimit.PerMinute <= 0 {
		return bad("proxy.rateLimit.perMinute", "want > 0, got %d", c.Proxy.RateLimit.PerMinute)
	}
	if c.Proxy.RateLimit.PerClientPerMinute < 0 {
		return bad("proxy.rateLimit.perClientPerMinute", "want >= 0 (0 = off), got %d", c.Proxy.RateLimit.PerClientPerMinute)
	}
	if c.Proxy.MaxConnections < 0 || c.Proxy.MaxConnectionsPerIP < 0 {
		return bad("proxy.maxConnections", "maxConnections and maxConnectionsPerIP want >= 0 (0 = off)")
	}
	if c.WebSocket.MaxClients < 0 || c.WebSocket.MaxClientsPerIP < 0 {
		return bad("websocket.maxClients", "maxClients and maxClientsPerIP want >= 0 (0 = off)")
	}
	for i, h := range c.Admin.LoopbackHosts {
		if h == "" || strings.ContainsAny(h, ":/ []@") {
			return bad(fmt.Sprintf("admin.loopbackHosts[%d]", i), "%q: want a host name without port", h)
		}
	}
	if c.WebSocket.HeartbeatInterval <= 0 {
		return bad("websocket.heartbeatInterval", "want milliseconds > 0, got %d", c.WebSocket.HeartbeatInterval)
	}
	if c.WebSocket.ClientTimeout <= 0 {
		return bad("websocket.clientTimeout", "want milliseconds > 0, got %d", c.WebSocket.ClientTimeout)
	}
	if err := checkListenHost(c.Bus.ListenHost); err != nil {
		return bad("bus.listenHost", "%v", err)
	}
	for i, f := range c.Bus.PublicKeys {
		if strings.TrimSpace(f) == "" {
			return bad(fmt.Sprintf("bus.publicKeys[%d]", i), "empty file name")
		}
	}
	for i, a := range c.Bus.Allow {
		if _, err := netip.ParsePrefix(a); err != nil {
			return bad(fmt.Sprintf("bus.allow[%d]", i), "%q: want a CIDR prefix such as 127.0.0.0/8", a)
		}
	}
	if c.Tokens.Leeway < 0 {
		return bad("tokens.leeway", "want seconds >= 0, got %d", c.Tokens.Leeway)
	}
	switch c.Agent.BPF {
	case "auto", "required", "off":
	default:
		return bad("agent.bpf", "%q: want auto, required or off", c.Agent.BPF)
	}
	switch c.Agent.XDPMode {
	case "native", "generic":
	default:
		return bad("agent.xdpMode", "%q: want native or generic", c.Agent.XDPMode)
	}
	if err := checkStateSource(c.Agent.StateSource); err != nil {
		return bad("agent.stateSource", "%v", err)
	}
	for i, ifname := range c.Agent.Interfaces {
		if ifname == "" || len(ifname) > 15 || strings.ContainsAny(ifname, "/ \t") {
			return bad(fmt.Sprintf("agent.interfaces[%d]", i), "%q is not an interface name", ifname)
		}
	}
	if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
		return bad("admin.listen", "%q: want host:port", c.Admin.Listen)
	}
	if c.Fleet.Listen != "" {
		if _, err := fleet.ParseListen(c.Fleet.Listen); err != nil {
			return bad("fleet.listen", "%v (or \"\" to receive no hints)", err)
		}
	}
	for i, p := range c.Fleet.Peers {
		if _, err := fleet.ParsePeer(p); err != nil {
			return bad(fmt.Sprintf("fleet.peers[%d]", i), "%v", err)
		}
	}
	if c.Fleet.ResolveInterval <= 0 {
		return bad("fleet.resolveInterval", "want milliseconds > 0, got %d", c.Fleet.ResolveInterval)
	}
	if _, err := logging.ParseLevel(c.Log.Level); err != nil {
		return bad("log.level", "%v", err)
	}
	if _, err := logging.ParseAccess(c.Log.Access); err != nil {
		return bad("log.access", "%v", err)
	}
	return nil
}

// LogLevel is log.level parsed (Validate has checked it).
func (c *Config) LogLevel() slog.Level {
	l, _ := logging.ParseLevel(c.Log.Level)
	return l
}

// AccessSample is log.access parsed: 1 every line, N one in N, -1 none.
func (c *Config) AccessSample() int {
	n, _ := logging.ParseAccess(c.Log.Access)
	return n
}

func checkStateSource(v string) error {
	if v != "file" && v != "config" {
		return fmt.Errorf("%q: want file or config", v)
	}
	return nil
}

// checkListenHost accepts an IP address literal: a name would be resolved
// once at start, to an address nobody sees in the config.
func checkListenHost(h string) error {
	if _, err := netip.ParseAddr(h); err != nil {
		return fmt.Errorf("%q: want an IP address such as :: (every address), 0.0.0.0 or 127.0.0.1", h)
	}
	return nil
}

// BusPublicKeys reads bus.publicKeys. A file that cannot be read or does
// not hold a PKIX PEM Ed25519 public key is an *Error naming the key and
// the file: the agent does not start.
func (c *Config) BusPublicKeys() ([]ed25519.PublicKey, error) {
	keys := make([]ed25519.PublicKey, 0, len(c.Bus.PublicKeys))
	for i, f := range c.Bus.PublicKeys {
		k, err := token.ReadPublicKey(f)
		if err != nil {
			// token's errors name the file already; say it once, without
			// the package prefix.
			msg := strings.TrimPrefix(err.Error(), "token: ")
			if !strings.Contains(msg, f) {
				msg = f + ": " + msg
			}
			return nil, &Error{Source: "config", Key: fmt.Sprintf("bus.publicKeys[%d]", i), Err: errors.New(msg)}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// AllowPrefixes returns bus.allow parsed (Validate has checked it).
func (c *Config) AllowPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.Bus.Allow))
	for _, a := range c.Bus.Allow {
		if p, err := netip.ParsePrefix(a); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

func codecField(name string) (codec.FieldID, bool) {
	f, ok := codec.FieldByName(name)
	return f.ID, ok
}

// checkOrigin accepts an absolute http(s) URL without query, fragment or
// credentials: an origin and an optional path prefix.
func checkOrigin(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("want an http:// or https:// URL")
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return fmt.Errorf("want scheme://host[:port][/path], nothing else")
	}
	return nil
}
