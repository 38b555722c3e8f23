package config

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/codec"
)

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "regedge.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreTheSeed(t *testing.T) {
	c, err := Load("", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.State() != codec.DefaultState() {
		t.Fatalf("default state %v, want %v", c.State(), codec.DefaultState())
	}
	if c.Proxy.ListenPort != 4873 || c.WebSocket.Port != 3000 || c.Bus.Port != 4874 || c.Admin.Listen != "127.0.0.1:9873" {
		t.Fatalf("default ports %d %d %d %s", c.Proxy.ListenPort, c.WebSocket.Port, c.Bus.Port, c.Admin.Listen)
	}
	if c.WebSocket.HeartbeatInterval != 100 || c.WebSocket.ClientTimeout != 30000 || c.Agent.BPF != "auto" {
		t.Fatalf("defaults %+v %+v", c.WebSocket, c.Agent)
	}
}

func TestFileOverridesDefaults(t *testing.T) {
	p := writeFile(t, `{"config":{"version":1,"registryHash":"0xDEADBEEF","featureFlags":"0x00000001","terminalMode":1,"rows":40,"cols":120,"reserved":0},
		"proxy":{"listenPort":5873,"upstreams":[{"host":"registry.mycompany.com","port":443,"hash":"0xdeadbeef","tls":true,"auth":{"tokenFile":"/etc/t"}},{"host":"registry.npmjs.org","port":443,"hash":0,"tls":true}],"scopes":{"@mycompany":"0xdeadbeef"}},
		"tokens":{"publicKeys":["/etc/regedge/edge.pub"]}}`)
	c, err := Load(p, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	s := c.State()
	if s.RegistryHash != 0xdeadbeef || s.FeatureFlags != 1 || s.Rows != 40 || c.Proxy.ListenPort != 5873 {
		t.Fatalf("state %v port %d", s, c.Proxy.ListenPort)
	}
	if c.Proxy.Timeout != 30000 || c.WebSocket.Port != 3000 {
		t.Fatal("keys absent from the file lost their defaults")
	}
	if len(c.Proxy.Upstreams) != 2 || c.Proxy.Scopes["@mycompany"] != 0xdeadbeef {
		t.Fatalf("upstreams %+v scopes %v", c.Proxy.Upstreams, c.Proxy.Scopes)
	}
}

func TestFileErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		body string
		key  string
	}{
		{`{"proxy":{"listenPort":4873,"bogus":1}}`, "bogus"},
		{`{"config":{"registryHash":"0xZZ"}}`, "(file)"},
		{`{"config":{"terminalMode":4}}`, "config.terminalMode"},
		{`{"config":{"rows":0}}`, "config.rows"},
		{`{"config":{"featureFlags":2048}}`, "config.featureFlags"},
		{`{"proxy":{"upstreams":[{"host":"a","port":443,"hash":1},{"host":"b","port":443,"hash":"0x00000001"}]}}`, "proxy.upstreams[1].hash"},
		{`{"proxy":{"upstreams":[{"host":"","port":443,"hash":1}]}}`, "proxy.upstreams[0].host"},
		{`{"proxy":{"scopes":{"mycompany":1}}}`, "proxy.scopes"},
		{`{"proxy":{"tls":{"cert":"c"}}}`, "proxy.tls"},
		{`{"bus":{"allow":["10.0.0.0/33"]}}`, "bus.allow[0]"},
		{`{"agent":{"bpf":"maybe"}}`, "agent.bpf"},
		{`{"agent":{"xdpMode":"offload"}}`, "agent.xdpMode"},
		{`{"admin":{"listen":"9873"}}`, "admin.listen"},
		{`{"agent":{"stateSource":"disk"}}`, "agent.stateSource"},
		{`{"websocket":{"heartbeatInterval":0}}`, "websocket.heartbeatInterval"},
		{`{} {}`, "(file)"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			_, err := Load(writeFile(t, tc.body), noEnv)
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tc.key {
				t.Errorf("%s: err %v, want key %s", tc.body, err, tc.key)
			}
		})
	}
}

func TestEnvOverridesFile(t *testing.T) {
	p := writeFile(t, `{"proxy":{"listenPort":5873}}`)
	c, err := Load(p, envOf(map[string]string{
		"PROXY_PORT": "6873", "BUN_CONFIG_TERMINAL_ROWS": "50", "BUN_CONFIG_REGISTRY_HASH": "0x00000042",
		"UPSTREAM_PRIMARY": "http://127.0.0.1:8080", "REGEDGE_INTERFACES": "veth0, veth1",
		"WS_HEARTBEAT_INTERVAL": "250", "REGEDGE_BPF": "off", "REGEDGE_BUS_PORT": "5874",
		"REGEDGE_PROXY_FAST_PATH": "false", "REGEDGE_STATE_SOURCE": "config",
		"REGEDGE_SK_LOOKUP": "false",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy.ListenPort != 6873 || c.State().Rows != 50 || c.State().RegistryHash != 0x42 {
		t.Fatalf("env not applied: port %d state %v", c.Proxy.ListenPort, c.State())
	}
	var primary *Upstream
	for i := range c.Proxy.Upstreams {
		if c.Proxy.Upstreams[i].Hash == 0x42 {
			primary = &c.Proxy.Upstreams[i]
		}
	}
	if primary == nil || primary.Host != "127.0.0.1" || primary.Port != 8080 || primary.TLS {
		t.Fatalf("UPSTREAM_PRIMARY: %+v", c.Proxy.Upstreams)
	}
	if strings.Join(c.Agent.Interfaces, ",") != "veth0,veth1" || c.WebSocket.HeartbeatInterval != 250 || c.Agent.BPF != "off" || c.Bus.Port != 5874 {
		t.Fatalf("agent %+v ws %+v bus %+v", c.Agent, c.WebSocket, c.Bus)
	}
	if c.Agent.StateSource != "config" || Default().Agent.StateSource != "file" {
		t.Fatalf("REGEDGE_STATE_SOURCE=config: stateSource %q (default %q, want file)", c.Agent.StateSource, Default().Agent.StateSource)
	}
	if c.Proxy.FastPath || !Default().Proxy.FastPath {
		t.Fatalf("REGEDGE_PROXY_FAST_PATH=false: fastPath %v (default %v, want true)", c.Proxy.FastPath, Default().Proxy.FastPath)
	}
	if c.Agent.SkLookup || !Default().Agent.SkLookup {
		t.Fatalf("REGEDGE_SK_LOOKUP=false: skLookup %v (default %v, want true)", c.Agent.SkLookup, Default().Agent.SkLookup)
	}
}

func TestEnvErrorsNameTheVariable(t *testing.T) {
	for name, val := range map[string]string{
		"PROXY_PORT": "http", "BUN_CONFIG_TERMINAL_MODE": "4", "BUN_CONFIG_TERMINAL_ROWS": "0",
		"BUN_CONFIG_VERSION": "300", "BUN_CONFIG_REGISTRY_HASH": "0xnothex", "UPSTREAM_PRIMARY": "ftp://x",
		"UPSTREAMS": `[{"host":"a","bogus":1}]`, "WS_TIMEOUT": "soon", "REGEDGE_PROXY_FAST_PATH": "maybe",
		"REGEDGE_STATE_SOURCE": "disk", "REGEDGE_LOG_LEVEL": "loud", "REGEDGE_LOG_ACCESS": "sample:0",
		"REGEDGE_SK_LOOKUP": "sometimes",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load("", envOf(map[string]string{name: val}))
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != name || ce.Source != "environment" {
				t.Errorf("%s=%s: err %v, want one naming the variable", name, val, err)
			}
		})
	}
}

func TestLogSettings(t *testing.T) {
	c := Default()
	if c.Log.Level != "info" || c.Log.Access != "on" || c.LogLevel() != slog.LevelInfo || c.AccessSample() != 1 {
		t.Fatalf("defaults: %+v", c.Log)
	}
	c, err := Load(writeFile(t, `{"log":{"level":"debug","access":"sample:100"}}`), envOf(map[string]string{"REGEDGE_LOG_ACCESS": "off"}))
	if err != nil || c.LogLevel() != slog.LevelDebug || c.AccessSample() != -1 {
		t.Fatalf("file then env: %+v %v", c, err)
	}
	_, err = Load(writeFile(t, `{"log":{"access":"sometimes"}}`), noEnv)
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "log.access" {
		t.Fatalf("bad log.access: %v", err)
	}
}

func TestHashJSON(t *testing.T) {
	for in, want := range map[string]Hash{`"0xa1b2c3d4"`: 0xa1b2c3d4, `"0XA1B2C3D4"`: 0xa1b2c3d4, `0`: 0, `4294967295`: 0xffffffff} {
		t.Run(in, func(t *testing.T) {
			var h Hash
			if err := h.UnmarshalJSON([]byte(in)); err != nil || h != want {
				t.Errorf("%s: %v, %v", in, h, err)
			}
		})
	}
	for _, in := range []string{`"0x1ffffffff"`, `4294967296`, `-1`, `"x"`, `true`} {
		var h Hash
		if err := h.UnmarshalJSON([]byte(in)); err == nil {
			t.Errorf("%s accepted as %v", in, h)
		}
	}
	if b, _ := Hash(0xa1b2c3d4).MarshalJSON(); string(b) != `"0xa1b2c3d4"` {
		t.Errorf("MarshalJSON = %s", b)
	}
}

func TestSplitList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"eth0", []string{"eth0"}},
		{"a,b", []string{"a", "b"}},
		{" a , b ,", []string{"a", "b"}},
		{",,", nil},
		{"", nil},
		{"10.0.0.2:4874, 10.0.0.3:4874", []string{"10.0.0.2:4874", "10.0.0.3:4874"}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := SplitList(tc.in); !slices.Equal(got, tc.want) {
				t.Fatalf("SplitList(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// Times stay milliseconds in JSON, as in the seed's files; Duration is the
// one conversion.
func TestMillis(t *testing.T) {
	var ws WebSocket
	if err := json.Unmarshal([]byte(`{"heartbeatInterval":100,"clientTimeout":30000}`), &ws); err != nil {
		t.Fatal(err)
	}
	if ws.HeartbeatInterval.Duration() != 100*time.Millisecond || ws.ClientTimeout.Duration() != 30*time.Second {
		t.Fatalf("read %+v", ws)
	}
	b, err := json.Marshal(ws)
	if err != nil || !strings.Contains(string(b), `"heartbeatInterval":100,"clientTimeout":30000`) {
		t.Fatalf("wrote %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`{"heartbeatInterval":"100ms"}`), &ws); err == nil {
		t.Fatal(`"100ms" was read as milliseconds: the unit is fixed, the value a number`)
	}
	c, err := Load("", envOf(map[string]string{"PROXY_TIMEOUT": "1500"}))
	if err != nil || c.Proxy.Timeout.Duration() != 1500*time.Millisecond {
		t.Fatalf("PROXY_TIMEOUT=1500: %v, %v", c.Proxy.Timeout, err)
	}
}

// The feature flags have their own type, written as the hash is.
func TestFlagsJSON(t *testing.T) {
	var s State
	if err := json.Unmarshal([]byte(`{"featureFlags":"0x00000007"}`), &s); err != nil || s.FeatureFlags != 7 {
		t.Fatalf("featureFlags %v, %v", s.FeatureFlags, err)
	}
	if err := json.Unmarshal([]byte(`{"featureFlags":5}`), &s); err != nil || s.FeatureFlags != 5 {
		t.Fatalf("featureFlags as a number: %v, %v", s.FeatureFlags, err)
	}
	if b, err := json.Marshal(Flags(7)); err != nil || string(b) != `"0x00000007"` {
		t.Fatalf("Flags(7) = %s, %v", b, err)
	}
}

func TestBusSettings(t *testing.T) {
	c := Default()
	if c.Bus.ListenHost != "0.0.0.0" || len(c.Bus.PublicKeys) != 0 {
		t.Fatalf("defaults: listenHost %q publicKeys %v", c.Bus.ListenHost, c.Bus.PublicKeys)
	}
	c, err := Load(writeFile(t, `{"bus":{"listenHost":"10.0.0.5","publicKeys":["/etc/regedge/bus.pub"]}}`), envOf(map[string]string{
		"REGEDGE_BUS_LISTEN_HOST": "::1", "REGEDGE_BUS_PUBLIC_KEYS": "a.pub, b.pub",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bus.ListenHost != "::1" || strings.Join(c.Bus.PublicKeys, ",") != "a.pub,b.pub" {
		t.Fatalf("env not applied: %+v", c.Bus)
	}
	for _, body := range []string{`{"bus":{"listenHost":"bus.example"}}`, `{"bus":{"listenHost":""}}`, `{"bus":{"listenHost":"10.0.0.5:4874"}}`} {
		_, err := Load(writeFile(t, body), noEnv)
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != "bus.listenHost" {
			t.Errorf("%s: err %v, want one naming bus.listenHost", body, err)
		}
	}
	_, err = Load(writeFile(t, `{"bus":{"publicKeys":[""]}}`), noEnv)
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "bus.publicKeys[0]" {
		t.Errorf("empty key file name: err %v", err)
	}
	_, err = Load("", envOf(map[string]string{"REGEDGE_BUS_LISTEN_HOST": "everywhere"}))
	if !errors.As(err, &ce) || ce.Key != "REGEDGE_BUS_LISTEN_HOST" || ce.Source != "environment" {
		t.Errorf("REGEDGE_BUS_LISTEN_HOST=everywhere: err %v", err)
	}
}

// TestBusPublicKeysNameTheFile: every kind of key file that does not give an
// Ed25519 public key is an error naming the key and the file, and a good
// file loads.
func TestBusPublicKeysNameTheFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pkix, _ := x509.MarshalPKIXPublicKey(pub)
	p8, _ := x509.MarshalPKCS8PrivateKey(priv)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	good := write("good.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}))
	for name, file := range map[string]string{
		"missing":     filepath.Join(dir, "missing.pub"),
		"not PEM":     write("junk.pub", []byte("hello\n")),
		"private key": write("edge.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})),
		"bad DER":     write("bad.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}})),
		"ECDSA":       write("ec.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPub})),
	} {
		c := Default()
		c.Bus.PublicKeys = []string{good, file}
		keys, err := c.BusPublicKeys()
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != "bus.publicKeys[1]" || !strings.Contains(err.Error(), file) || keys != nil {
			t.Errorf("%s: keys %v, err %v; want an error naming bus.publicKeys[1] and %s", name, keys, err, file)
		}
		if strings.Count(err.Error(), file) != 1 {
			t.Errorf("%s: %v names the file more than once", name, err)
		}
	}
	c := Default()
	c.Bus.PublicKeys = []string{good}
	keys, err := c.BusPublicKeys()
	if err != nil || len(keys) != 1 || !keys[0].Equal(pub) {
		t.Fatalf("good key: %v, %v", keys, err)
	}
}

// TestUpstreamAuthNeedsTokens: an upstream credential on an edge that does
// not check tokens would be lent to every client: the config is refused,
// saying why and what to do.
func TestUpstreamAuthNeedsTokens(t *testing.T) {
	body := `{"proxy":{"upstreams":[{"host":"r","port":443,"hash":0,"tls":true,"auth":{"tokenFile":"/etc/t"}}]}}`
	_, err := Load(writeFile(t, body), noEnv)
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "proxy.upstreams[0].auth" || !strings.Contains(err.Error(), "tokens.publicKeys") {
		t.Fatalf("auth without tokens: %v", err)
	}
	// The same with keys from the environment is fine.
	if _, err := Load(writeFile(t, body), envOf(map[string]string{"REGEDGE_TOKEN_PUBLIC_KEYS": "/k.pub"})); err != nil {
		t.Fatalf("auth with REGEDGE_TOKEN_PUBLIC_KEYS: %v", err)
	}
}

func TestAuthzAndLimitKeys(t *testing.T) {
	c, err := Load(writeFile(t, `{"proxy":{"upstreams":[{"host":"a","port":443,"hash":"0xa1b2c3d4"},{"host":"b","port":443,"hash":"0x00000a0d"}],
		"audit":"0x00000a0d","rateLimit":{"perMinute":5000,"perClientPerMinute":300},"maxConnections":10,"maxConnectionsPerIP":2},
		"websocket":{"maxClients":5,"maxClientsPerIP":1},"tokens":{"anonymousRead":true},"admin":{"loopbackHosts":["edge.internal"]}}`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy.Audit == nil || *c.Proxy.Audit != 0xa0d || c.Proxy.RateLimit.PerClientPerMinute != 300 || !c.Tokens.AnonymousRead ||
		c.Proxy.MaxConnections != 10 || c.Proxy.MaxConnectionsPerIP != 2 || c.WebSocket.MaxClients != 5 || c.WebSocket.MaxClientsPerIP != 1 ||
		len(c.Admin.LoopbackHosts) != 1 {
		t.Fatalf("%+v %+v %+v %+v", c.Proxy, c.WebSocket, c.Tokens, c.Admin)
	}
	d := Default()
	if d.Proxy.Audit != nil || d.Tokens.AnonymousRead || d.Proxy.RateLimit.PerClientPerMinute <= 0 ||
		d.Proxy.RateLimit.PerMinute < 2*d.Proxy.RateLimit.PerClientPerMinute || d.Proxy.MaxConnections <= 0 || d.WebSocket.MaxClients <= 0 {
		t.Fatalf("defaults: %+v %+v", d.Proxy, d.WebSocket)
	}
	c, err = Load("", envOf(map[string]string{"REGEDGE_TOKEN_ANONYMOUS_READ": "true", "REGEDGE_PROXY_AUDIT": "0", "REGEDGE_PROXY_RATE_LIMIT_PER_CLIENT_PER_MINUTE": "0",
		"REGEDGE_PROXY_MAX_CONNECTIONS": "3", "REGEDGE_PROXY_MAX_CONNECTIONS_PER_IP": "1", "REGEDGE_WS_MAX_CLIENTS": "2", "REGEDGE_WS_MAX_CLIENTS_PER_IP": "1",
		"REGEDGE_ADMIN_LOOPBACK_HOSTS": "a.internal, b.internal"}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Tokens.AnonymousRead || c.Proxy.Audit == nil || *c.Proxy.Audit != 0 || c.Proxy.RateLimit.PerClientPerMinute != 0 || c.Proxy.MaxConnections != 3 ||
		c.Proxy.MaxConnectionsPerIP != 1 || c.WebSocket.MaxClients != 2 || c.WebSocket.MaxClientsPerIP != 1 || len(c.Admin.LoopbackHosts) != 2 {
		t.Fatalf("from the environment: %+v %+v %+v", c.Proxy, c.Tokens, c.Admin)
	}
	for _, tc := range []struct{ body, key string }{
		{`{"proxy":{"audit":"0x00000bad"}}`, "proxy.audit"},
		{`{"proxy":{"rateLimit":{"perMinute":10,"perClientPerMinute":-1}}}`, "proxy.rateLimit.perClientPerMinute"},
		{`{"proxy":{"maxConnectionsPerIP":-1}}`, "proxy.maxConnections"},
		{`{"websocket":{"maxClients":-1}}`, "websocket.maxClients"},
		{`{"admin":{"loopbackHosts":["evil.example:80"]}}`, "admin.loopbackHosts[0]"},
	} {
		_, err := Load(writeFile(t, tc.body), noEnv)
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%s: %v, want key %s", tc.body, err, tc.key)
		}
	}
	for name, v := range map[string]string{"REGEDGE_TOKEN_ANONYMOUS_READ": "yes please", "REGEDGE_PROXY_AUDIT": "0xZZ", "REGEDGE_PROXY_MAX_CONNECTIONS": "many"} {
		_, err := Load("", envOf(map[string]string{name: v}))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != name {
			t.Errorf("%s=%s: %v", name, v, err)
		}
	}
}
