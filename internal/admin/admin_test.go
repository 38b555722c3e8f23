package admin

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/token"
)

type fakeStatus struct {
	st   *state.Store
	subs *Subsystems // nil: every part ok
}

func (fakeStatus) EffectiveConfig() any { return map[string]string{"admin": "x"} }
func (fakeStatus) RecentLogs() []byte   { return []byte(`{"msg":"hello"}` + "\n") }

func (f fakeStatus) Subsystems(context.Context) Subsystems {
	if f.subs != nil {
		return *f.subs
	}
	ok := Subsystem{Status: StatusOK}
	return Subsystems{Proxy: ok, Upstreams: ok, Cache: Subsystem{Status: StatusOff}, Kernel: ok, ConfigPlane: ok}
}

func (f fakeStatus) State() codec.State { return f.st.State() }
func (f fakeStatus) SetState(s codec.State) (codec.State, error) {
	return f.st.Set(s, state.SourceCLI)
}
func (fakeStatus) WebSocketClients() int                  { return 0 }
func (fakeStatus) PurgeCache(string, string) (int, error) { return 0, nil }
func (fakeStatus) BPFMode() string                        { return "userspace" }
func (fakeStatus) BPFReason() string                      { return "test" }
func (fakeStatus) BPFNotes() []string                     { return nil }
func (fakeStatus) Interfaces() []string                   { return nil }
func (fakeStatus) Ready() bool                            { return true }

// putFrom sends PUT /api/config as if it arrived on local address local
// (with that address as its Host).
func putFrom(h http.Handler, local string, auth string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPut, "/api/config", strings.NewReader(`{"set":{"rows":40}}`))
	r.Host = local
	addr, _ := net.ResolveTCPAddr("tcp", local)
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(addr)))
	if auth != "" {
		r.Header.Set("Authorization", "Bearer "+auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestPutOffLoopbackNeedsAdminToken(t *testing.T) {
	st, _ := state.Open(state.Options{Initial: codec.DefaultState()})
	keyFile, pubFile, err := token.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, _ := token.NewVerifier([]string{pubFile}, 0)
	key, _ := token.ReadPrivateKey(keyFile)
	exp := jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}
	adminTok, _ := token.Issue(key, "", token.Claims{Scope: token.ScopeConfigWrite, RegisteredClaims: exp})
	userTok, _ := token.Issue(key, "", token.Claims{RegisteredClaims: exp})

	noTokens := Handler(fakeStatus{st: st}, prometheus.NewRegistry(), time.Now(), nil)
	if w := putFrom(noTokens, "192.0.2.2:9873", adminTok); w.Code != http.StatusForbidden {
		t.Fatalf("off loopback without tokens configured: %d", w.Code)
	}
	h := Handler(fakeStatus{st: st}, prometheus.NewRegistry(), time.Now(), TokenAuthorizer(v))
	for _, tc := range []struct {
		name, local, tok string
		code             int
	}{
		{"off loopback without a token", "192.0.2.2:9873", "", http.StatusUnauthorized},
		{"off loopback with a user token", "192.0.2.2:9873", userTok, http.StatusUnauthorized},
		{"off loopback with garbage", "192.0.2.2:9873", "garbage", http.StatusUnauthorized},
		{"on loopback without a token", "127.0.0.1:9873", "", http.StatusOK},
		{"off loopback with an admin token", "192.0.2.2:9873", adminTok, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if w := putFrom(h, tc.local, tc.tok); w.Code != tc.code {
				t.Errorf("PUT on %s with %q: %d %s, want %d", tc.local, tc.tok, w.Code, w.Body, tc.code)
			} else if tc.code == http.StatusUnauthorized && !strings.Contains(w.Body.String(), "Invalid proxy token") {
				t.Errorf("401 body %s", w.Body)
			}
		})
	}
}

// A change that cannot be persisted is 507 with rule "storage" (not 400,
// not a bare 500), and nothing changes.
func TestPutStorageFailureIs507(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "statedir")
	st, err := state.Open(state.Options{Initial: codec.DefaultState(), File: filepath.Join(sub, "state")})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sub, nil, 0o600); err != nil { // the directory cannot be created
		t.Fatal(err)
	}
	h := Handler(fakeStatus{st: st}, prometheus.NewRegistry(), time.Now(), nil)
	w := putFrom(h, "127.0.0.1:9873", "")
	var body apiError
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusInsufficientStorage ||
		body.Rule != "storage" || !strings.Contains(body.Error, sub) || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("PUT with a broken state directory: %d %s (%v)", w.Code, w.Body, err)
	}
	if st.State() != codec.DefaultState() {
		t.Fatalf("state %v after a refused PUT", st.State())
	}
	os.Remove(sub)
	if w := putFrom(h, "127.0.0.1:9873", ""); w.Code != http.StatusOK || st.State().Rows != 40 {
		t.Fatalf("after the repair: %d %s", w.Code, w.Body)
	}
}

// TestLoopbackWritesNeedALoopbackHost: a PUT on the loopback listener whose
// Host is another name (a page on evil.example re-pointed at 127.0.0.1 by
// DNS rebinding, sending text/plain to avoid a preflight) changes nothing;
// with a loopback Host, or a configured name, it does.
func TestLoopbackWritesNeedALoopbackHost(t *testing.T) {
	st, _ := state.Open(state.Options{Initial: codec.DefaultState()})
	h := Handler(fakeStatus{st: st}, prometheus.NewRegistry(), time.Now(), nil, Options{LoopbackHosts: []string{"edge.internal"}})
	for _, tc := range []struct {
		host, origin string
		code         int
	}{
		{"evil.example", "", http.StatusForbidden},
		{"evil.example:9873", "http://evil.example:9873", http.StatusForbidden},
		{"127.0.0.1:9873", "http://evil.example", http.StatusForbidden},
		{"127.0.0.1.evil.example:9873", "", http.StatusForbidden},
		{"", "", http.StatusForbidden},
		{"localhost:9873", "http://localhost:9873", http.StatusOK},
		{"127.0.0.1:9873", "", http.StatusOK},
		{"[::1]:9873", "", http.StatusOK},
		{"edge.internal:9873", "", http.StatusOK},
	} {
		st.Set(codec.DefaultState(), state.SourceCLI)
		r := httptest.NewRequest(http.MethodPut, "/api/config", strings.NewReader(`{"set":{"rows":40}}`))
		r.Host = tc.host
		r.Header.Set("Content-Type", "text/plain")
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		addr, _ := net.ResolveTCPAddr("tcp", "127.0.0.1:9873")
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(addr)))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("Host %q Origin %q: %d %s, want %d", tc.host, tc.origin, w.Code, w.Body, tc.code)
		}
		if changed := st.State().Rows == 40; changed != (tc.code == http.StatusOK) {
			t.Errorf("Host %q Origin %q: state changed %v", tc.host, tc.origin, changed)
		}
	}
	// DELETE /api/cache is a write too.
	r := httptest.NewRequest(http.MethodDelete, "/api/cache/left-pad", nil)
	r.Host = "evil.example"
	addr, _ := net.ResolveTCPAddr("tcp", "127.0.0.1:9873")
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(addr)))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Errorf("DELETE /api/cache with a rebound Host: %d", w.Code)
	}
}

func getFrom(h http.Handler, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w
}

// TestHealthAndReadinessFollowTheSubsystems: /health is a report (200, the
// worst part decides its status); /readyz fails when the proxy does not
// answer or no upstream is available, and says which.
func TestHealthAndReadinessFollowTheSubsystems(t *testing.T) {
	st, _ := state.Open(state.Options{Initial: codec.DefaultState()})
	ok := Subsystem{Status: StatusOK}
	for _, tc := range []struct {
		name          string
		subs          Subsystems
		health        string
		ready         int
		readyContains string
	}{
		{"all ok", Subsystems{ok, ok, Subsystem{Status: StatusOff}, ok, ok}, "healthy", 200, "ready"},
		{"userspace fallback", Subsystems{ok, ok, ok, Subsystem{Status: StatusDegraded, Detail: "userspace"}, ok}, "degraded", 200, "ready"},
		{"one upstream of two down", Subsystems{ok, Subsystem{Status: StatusDegraded}, ok, ok, ok}, "degraded", 200, "ready"},
		{"every upstream down", Subsystems{ok, Subsystem{Status: StatusFailed, Detail: "every upstream is unavailable"}, ok, ok, ok}, "unhealthy", 503, "upstreams: every upstream is unavailable"},
		{"proxy does not answer", Subsystems{Subsystem{Status: StatusFailed, Detail: "no answer through its own listener"}, ok, ok, ok, ok}, "unhealthy", 503, "proxy: no answer"},
	} {
		h := Handler(fakeStatus{st: st, subs: &tc.subs}, prometheus.NewRegistry(), time.Now(), nil)
		w := getFrom(h, "/health")
		var body struct {
			Status     string
			Subsystems map[string]struct{ Status string }
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != 200 || body.Status != tc.health || len(body.Subsystems) != 5 {
			t.Errorf("%s: /health %d %s", tc.name, w.Code, w.Body)
		}
		if w := getFrom(h, "/readyz"); w.Code != tc.ready || !strings.Contains(w.Body.String(), tc.readyContains) {
			t.Errorf("%s: /readyz %d %s", tc.name, w.Code, w.Body)
		}
		if w := getFrom(h, "/livez"); w.Code != 200 {
			t.Errorf("%s: /livez %d", tc.name, w.Code)
		}
	}
}

// TestPprofOnlyWhenAsked: admin.pprof off (the default) serves no
// profiles; on, it does.
func TestPprofOnlyWhenAsked(t *testing.T) {
	st, _ := state.Open(state.Options{Initial: codec.DefaultState()})
	for _, on := range []bool{false, true} {
		var h http.Handler
		if on {
			h = Handler(fakeStatus{st: st}, prometheus.NewRegistry(), time.Now(), nil, Options{Pprof: true})
		} else {
			h = Handler(fakeStatus{st: st}, prometheus.NewRegistry(), time.Now(), nil)
		}
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		for _, p := range []string{"/debug/pprof/", "/debug/pprof/symbol"} {
			if w := getFrom(h, p); w.Code != want {
				t.Errorf("pprof %v: %s %d, want %d", on, p, w.Code, want)
			}
		}
	}
}

// TestDebugReadsAreGuardedLikeWrites: the support bundle's config and
// logs are served on loopback, and elsewhere only with an admin token.
func TestDebugReadsAreGuardedLikeWrites(t *testing.T) {
	st, _ := state.Open(state.Options{Initial: codec.DefaultState()})
	h := Handler(fakeStatus{st: st}, prometheus.NewRegistry(), time.Now(), nil)
	for _, path := range []string{"/api/debug/config", "/api/debug/logs"} {
		for _, tc := range []struct {
			local string
			code  int
		}{{"127.0.0.1:9873", 200}, {"192.0.2.2:9873", 403}} {
			r := httptest.NewRequest(http.MethodGet, path, nil)
			r.Host = tc.local // the loopback trust needs a loopback Host too
			addr, _ := net.ResolveTCPAddr("tcp", tc.local)
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(addr)))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code {
				t.Errorf("%s on %s: %d, want %d", path, tc.local, w.Code, tc.code)
			}
		}
	}
}
