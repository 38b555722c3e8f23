package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
)

// TestReadinessFollowsTheUpstream: with its only upstream unreachable the
// agent is not ready (and says why); when the upstream is back, the
// agent's own probe closes the breaker with no client sending anything,
// and it is ready again.
func TestReadinessFollowsTheUpstream(t *testing.T) {
	var cut atomic.Bool
	var pings atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cut.Load() {
			panic(http.ErrAbortHandler) // hang up before a response head
		}
		if r.URL.Path == "/-/ping" {
			pings.Add(1)
		}
		w.Write([]byte("{}"))
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	port, _ := strconv.Atoi(u.Port())
	cfg := config.Default()
	cfg.Proxy.Upstreams = []config.Upstream{{Host: u.Hostname(), Port: port, Hash: 0}}
	cfg.Proxy.Breaker = config.Breaker{Failures: 2, Cooldown: 300}
	cfg.Proxy.RetryRatio = 0
	a := startAgent(t, cfg)
	if code, body := get(t, a, "/readyz"); code != 200 {
		t.Fatalf("/readyz at start: %d %s", code, body)
	}
	proxy := "http://" + a.ProxyAddr().String()
	cut.Store(true)
	for i := 0; i < 2; i++ {
		resp, err := http.Get(proxy + "/left-pad")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 502 {
			t.Fatalf("request %d with the upstream cut: %d", i, resp.StatusCode)
		}
	}
	code, body := get(t, a, "/readyz")
	if code != 503 || !strings.Contains(body, "every upstream is unavailable") {
		t.Fatalf("/readyz with the breaker open: %d %s", code, body)
	}
	if _, h := get(t, a, "/health"); !strings.Contains(h, `"status":"unhealthy"`) || !strings.Contains(h, `"breaker":"`) {
		t.Fatalf("/health with the breaker open: %s", h)
	}
	if _, m := get(t, a, "/metrics"); !strings.Contains(m, `regedge_upstream_breaker_open{upstream="`+u.Host+`"} 1`) ||
		!strings.Contains(m, `regedge_upstream_up{upstream="`+u.Host+`"} 0`) {
		t.Fatalf("metrics with the breaker open:\n%s", m)
	}
	cut.Store(false)
	testutil.Eventually(t, 10*time.Second, "ready again after the upstream came back", func() bool {
		code, _ := get(t, a, "/readyz")
		return code == 200
	})
	if pings.Load() == 0 {
		t.Fatal("ready again without a probe reaching the upstream")
	}
}

// TestProxyThatDoesNotAcceptIsNotServing: the proxy's socket is bound but
// nothing accepts from it (the accept loop is gone): the self-probe,
// through the listener, fails.
func TestProxyThatDoesNotAcceptIsNotServing(t *testing.T) {
	cfg := config.Default()
	cfg.Admin.Listen, cfg.Bus.Port, cfg.WebSocket.Port, cfg.Proxy.ListenPort = "127.0.0.1:0", 0, 0, 0
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	defer a.proxyLn.Close()
	defer a.adminLn.Close()
	defer a.wsLn.Close()
	defer a.busConn.Close()
	p := a.Subsystems(context.Background()).Proxy
	if p.Status != "failed" || !strings.Contains(p.Detail, "own listener") {
		t.Fatalf("proxy part: %+v", p)
	}
}

// TestFleetInfoMetrics: the build and the current state are labels, so
// that versions and config divergence across a fleet are one query; the
// state label follows a change at once.
func TestFleetInfoMetrics(t *testing.T) {
	cfg := config.Default()
	cfg.Admin.Listen, cfg.Bus.Port, cfg.WebSocket.Port, cfg.Proxy.ListenPort = "127.0.0.1:0", 0, 0, 0
	a, err := New(cfg, slog.New(slog.DiscardHandler), WithBuildInfo("v1.2.3", "abc1234"))
	if err != nil {
		t.Fatal(err)
	}
	page := func() string {
		fams, err := a.registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, f := range fams {
			for _, m := range f.Metric {
				b.WriteString(f.GetName())
				for _, l := range m.Label {
					b.WriteString(" " + l.GetName() + "=" + l.GetValue())
				}
				b.WriteString("\n")
			}
		}
		return b.String()
	}
	p := page()
	if !strings.Contains(p, "regedge_build_info commit=abc1234 version=v1.2.3\n") ||
		!strings.Contains(p, "regedge_config_state_info dump=0x01a1b2c3d40000000702185000\n") {
		t.Fatalf("metrics:\n%s", p)
	}
	s := a.State()
	s.Rows = 40
	if _, err := a.SetState(s); err != nil {
		t.Fatal(err)
	}
	if p := page(); !strings.Contains(p, "regedge_config_state_info dump="+s.Dump()+"\n") || strings.Count(p, "regedge_config_state_info") != 1 {
		t.Fatalf("after a change:\n%s", p)
	}
}
