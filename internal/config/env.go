package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/regedge/regedge/internal/fleet"
	"github.com/regedge/regedge/internal/logging"
)

// applyEnv applies the environment variables of docs/configuration.md over c. A bad
// value is an *Error naming the variable.
func applyEnv(c *Config, env func(string) (string, bool)) error {
	u8 := func(name string, dst *uint8) error {
		return withEnv(env, name, func(v string) error {
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return fmt.Errorf("%q: want a number 0..255", v)
			}
			*dst = uint8(n)
			return nil
		})
	}
	integer := func(name string, dst *int) error { return envInt(env, name, dst) }
	millis := func(name string, dst *Millis) error { return envInt(env, name, dst) }
	hash := func(name string, dst *Hash) error {
		return withEnv(env, name, func(v string) error {
			h, err := ParseHash(v)
			if err != nil {
				return err
			}
			*dst = h
			return nil
		})
	}
	boolean := func(name string, dst *bool) error {
		return withEnv(env, name, func(v string) error {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q: want true or false", v)
			}
			*dst = on
			return nil
		})
	}
	str := func(name string, dst *string) error {
		return withEnv(env, name, func(v string) error { *dst = v; return nil })
	}
	steps := []error{
		u8("BUN_CONFIG_VERSION", &c.Config.Version),
		hash("BUN_CONFIG_REGISTRY_HASH", &c.Config.RegistryHash),
		hash("BUN_CONFIG_FEATURE_FLAGS", (*Hash)(&c.Config.FeatureFlags)),
		u8("BUN_CONFIG_TERMINAL_MODE", &c.Config.TerminalMode),
		u8("BUN_CONFIG_TERMINAL_ROWS", &c.Config.Rows),
		u8("BUN_CONFIG_TERMINAL_COLS", &c.Config.Cols),
		integer("PROXY_PORT", &c.Proxy.ListenPort),
		str("PROXY_HOST", &c.Proxy.ListenHost),
		millis("PROXY_TIMEOUT", &c.Proxy.Timeout),
		withEnv(env, "UPSTREAMS", func(v string) error {
			var ups []Upstream
			dec := json.NewDecoder(strings.NewReader(v))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&ups); err != nil {
				return fmt.Errorf("want a JSON list of upstreams: %v", err)
			}
			c.Proxy.Upstreams = ups
			return nil
		}),
		withEnv(env, "UPSTREAM_PRIMARY", func(v string) error {
			return setUpstream(c, v, c.Config.RegistryHash)
		}),
		withEnv(env, "UPSTREAM_FALLBACK", func(v string) error { return setUpstream(c, v, 0) }),
		integer("WS_PORT", &c.WebSocket.Port),
		str("WS_HOST", &c.WebSocket.Hostname),
		millis("WS_HEARTBEAT_INTERVAL", &c.WebSocket.HeartbeatInterval),
		millis("WS_TIMEOUT", &c.WebSocket.ClientTimeout),
		withEnv(env, "REGEDGE_INTERFACES", func(v string) error {
			c.Agent.Interfaces = SplitList(v)
			return nil
		}),
		str("REGEDGE_BPF", &c.Agent.BPF),
		withEnv(env, "REGEDGE_PROXY_FAST_PATH", func(v string) error {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q: want true or false", v)
			}
			c.Proxy.FastPath = on
			return nil
		}),
		withEnv(env, "REGEDGE_SK_LOOKUP", func(v string) error {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q: want true or false", v)
			}
			c.Agent.SkLookup = on
			return nil
		}),
		str("REGEDGE_XDP_MODE", &c.Agent.XDPMode),
		str("REGEDGE_BPFFS", &c.Agent.BPFFS),
		str("REGEDGE_STATE_FILE", &c.Agent.StateFile),
		withEnv(env, "REGEDGE_STATE_SOURCE", func(v string) error {
			if err := checkStateSource(v); err != nil {
				return err
			}
			c.Agent.StateSource = v
			return nil
		}),
		str("REGEDGE_CACHE_DIR", &c.Proxy.Cache.Dir),
		str("REGEDGE_PROXY_PUBLIC_URL", &c.Proxy.PublicURL),
		millis("REGEDGE_PROXY_BODY_TIMEOUT", &c.Proxy.BodyTimeout),
		str("REGEDGE_ADMIN_LISTEN", &c.Admin.Listen),
		withEnv(env, "REGEDGE_ADMIN_PPROF", func(v string) error {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q: want true or false", v)
			}
			c.Admin.Pprof = on
			return nil
		}),
		withEnv(env, "REGEDGE_LOG_LEVEL", func(v string) error {
			_, err := logging.ParseLevel(v)
			c.Log.Level = v
			return err
		}),
		withEnv(env, "REGEDGE_LOG_ACCESS", func(v string) error {
			_, err := logging.ParseAccess(v)
			c.Log.Access = v
			return err
		}),
		integer("REGEDGE_BUS_PORT", &c.Bus.Port),
		withEnv(env, "REGEDGE_BUS_ALLOW", func(v string) error {
			c.Bus.Allow = SplitList(v)
			return nil
		}),
		withEnv(env, "REGEDGE_BUS_LISTEN_HOST", func(v string) error {
			if err := checkListenHost(v); err != nil {
				return err
			}
			c.Bus.ListenHost = v
			return nil
		}),
		withEnv(env, "REGEDGE_BUS_PUBLIC_KEYS", func(v string) error {
			c.Bus.PublicKeys = SplitList(v)
			return nil
		}),
		withEnv(env, "REGEDGE_TOKEN_PUBLIC_KEYS", func(v string) error {
			c.Tokens.PublicKeys = SplitList(v)
			return nil
		}),
		withEnv(env, "REGEDGE_FLEET_LISTEN", func(v string) error {
			if v != "" {
				if _, err := fleet.ParseListen(v); err != nil {
					return err
				}
			}
			c.Fleet.Listen = v
			return nil
		}),
		withEnv(env, "REGEDGE_FLEET_PEERS", func(v string) error {
			peers := SplitList(v)
			if _, err := fleet.ParsePeers(peers); err != nil {
				return fmt.Errorf("entry %v", err)
			}
			c.Fleet.Peers = peers
			return nil
		}),
		integer("REGEDGE_FLEET_RESOLVE_INTERVAL", &c.Fleet.ResolveInterval),
		boolean("REGEDGE_TOKEN_ANONYMOUS_READ", &c.Tokens.AnonymousRead),
		withEnv(env, "REGEDGE_PROXY_AUDIT", func(v string) error {
			if v == "" {
				c.Proxy.Audit = nil
				return nil
			}
			h, err := ParseHash(v)
			if err != nil {
				return err
			}
			c.Proxy.Audit = &h
			return nil
		}),
		integer("REGEDGE_PROXY_RATE_LIMIT_PER_MINUTE", &c.Proxy.RateLimit.PerMinute),
		integer("REGEDGE_PROXY_RATE_LIMIT_PER_CLIENT_PER_MINUTE", &c.Proxy.RateLimit.PerClientPerMinute),
		integer("REGEDGE_PROXY_MAX_CONNECTIONS", &c.Proxy.MaxConnections),
		integer("REGEDGE_PROXY_MAX_CONNECTIONS_PER_IP", &c.Proxy.MaxConnectionsPerIP),
		integer("REGEDGE_WS_MAX_CLIENTS", &c.WebSocket.MaxClients),
		integer("REGEDGE_WS_MAX_CLIENTS_PER_IP", &c.WebSocket.MaxClientsPerIP),
		withEnv(env, "REGEDGE_ADMIN_LOOPBACK_HOSTS", func(v string) error {
			c.Admin.LoopbackHosts = SplitList(v)
			return nil
		}),
	}
	for _, err := range steps {
		if err != nil {
			return err
		}
	}
	// Values from the environment are checked here so the error names the
	// variable rather than the key it set.
	return validateEnvState(c, env)
}

// EnvVars lists every variable applyEnv reads, for docs and `regedge run --help`.
var EnvVars = []string{
	"BUN_CONFIG_VERSION", "BUN_CONFIG_REGISTRY_HASH", "BUN_CONFIG_FEATURE_FLAGS",
	"BUN_CONFIG_TERMINAL_MODE", "BUN_CONFIG_TERMINAL_ROWS", "BUN_CONFIG_TERMINAL_COLS",
	"PROXY_PORT", "PROXY_HOST", "PROXY_TIMEOUT", "UPSTREAMS", "UPSTREAM_PRIMARY", "UPSTREAM_FALLBACK",
	"WS_PORT", "WS_HOST", "WS_HEARTBEAT_INTERVAL", "WS_TIMEOUT",
	"REGEDGE_INTERFACES", "REGEDGE_BPF", "REGEDGE_SK_LOOKUP", "REGEDGE_XDP_MODE", "REGEDGE_BPFFS", "REGEDGE_STATE_FILE", "REGEDGE_STATE_SOURCE", "REGEDGE_CACHE_DIR", "REGEDGE_PROXY_PUBLIC_URL", "REGEDGE_PROXY_BODY_TIMEOUT",
	"REGEDGE_ADMIN_LISTEN", "REGEDGE_BUS_PORT", "REGEDGE_BUS_ALLOW", "REGEDGE_BUS_LISTEN_HOST", "REGEDGE_BUS_PUBLIC_KEYS",
	"REGEDGE_TOKEN_PUBLIC_KEYS", "REGEDGE_FLEET_LISTEN", "REGEDGE_FLEET_PEERS", "REGEDGE_FLEET_RESOLVE_INTERVAL",
	"REGEDGE_TOKEN_ANONYMOUS_READ", "REGEDGE_PROXY_AUDIT",
	"REGEDGE_PROXY_RATE_LIMIT_PER_MINUTE", "REGEDGE_PROXY_RATE_LIMIT_PER_CLIENT_PER_MINUTE",
	"REGEDGE_PROXY_MAX_CONNECTIONS", "REGEDGE_PROXY_MAX_CONNECTIONS_PER_IP",
	"REGEDGE_WS_MAX_CLIENTS", "REGEDGE_WS_MAX_CLIENTS_PER_IP", "REGEDGE_ADMIN_LOOPBACK_HOSTS",
	"REGEDGE_LOG_LEVEL", "REGEDGE_LOG_ACCESS", "REGEDGE_ADMIN_PPROF",
}

// envInt sets *dst from the integer in variable name, when it is set.
func envInt[T ~int | ~int64](env func(string) (string, bool), name string, dst *T) error {
	return withEnv(env, name, func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q: want an integer", v)
		}
		*dst = T(n)
		return nil
	})
}

func withEnv(env func(string) (string, bool), name string, set func(string) error) error {
	v, ok := env(name)
	if !ok {
		return nil
	}
	if err := set(strings.TrimSpace(v)); err != nil {
		return &Error{Source: "environment", Key: name, Err: err}
	}
	return nil
}

func validateEnvState(c *Config, env func(string) (string, bool)) error {
	s := c.State()
	for _, f := range []struct {
		name  string
		field string
	}{
		{"BUN_CONFIG_VERSION", "version"}, {"BUN_CONFIG_FEATURE_FLAGS", "featureFlags"},
		{"BUN_CONFIG_TERMINAL_MODE", "terminalMode"}, {"BUN_CONFIG_TERMINAL_ROWS", "rows"},
		{"BUN_CONFIG_TERMINAL_COLS", "cols"},
	} {
		if _, set := env(f.name); !set {
			continue
		}
		fd, _ := codecField(f.field)
		if _, err := s.With(fd, s.Get(fd)); err != nil {
			return &Error{Source: "environment", Key: f.name, Err: err}
		}
	}
	return nil
}

// setUpstream sets (or adds) the upstream for hash from a URL such as
// https://registry.mycompany.com or http://127.0.0.1:8080.
func setUpstream(c *Config, raw string, hash Hash) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%q: want an http:// or https:// URL", raw)
	}
	up := Upstream{Host: u.Hostname(), Hash: hash, TLS: u.Scheme == "https", Port: 80}
	if up.TLS {
		up.Port = 443
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("%q: bad port", raw)
		}
		up.Port = n
	}
	for i := range c.Proxy.Upstreams {
		if c.Proxy.Upstreams[i].Hash == hash {
			up.Auth = c.Proxy.Upstreams[i].Auth
			c.Proxy.Upstreams[i] = up
			return nil
		}
	}
	c.Proxy.Upstreams = append(c.Proxy.Upstreams, up)
	return nil
}

// SplitList reads a comma-separated list as operators write them (in
// REGEDGE_INTERFACES and the like, and `config push --to`): items are
// trimmed and empty ones dropped, so "a, b," is [a b].
func SplitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
