package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/wsconfig"
)

func startAgent(t *testing.T, cfg *config.Config) *Agent {
	t.Helper()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Bus.Port = 0 // tests run in parallel processes: no fixed ports
	cfg.WebSocket.Port = 0
	cfg.Proxy.ListenPort = 0
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	cancel, done := serveInBackground(a)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// The admin listener accepts from Listen on; the agent is started once
	// Serve says it is ready (/readyz answered 503 before that: a flake).
	testutil.Eventually(t, 5*time.Second, "the agent to become ready", a.ready.Load)
	return a
}

// scrape is an admin page as the admin handler serves it, without a listener.
func scrape(t *testing.T, a *Agent, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	admin.Handler(a, a.registry, time.Now(), nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: %d", path, rec.Code)
	}
	return rec.Body.String()
}

func get(t *testing.T, a *Agent, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHealthHasTheSeedShapePlusBPF(t *testing.T) {
	a := startAgent(t, config.Default())
	code, body := get(t, a, "/health")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	var h struct {
		Status string `json:"status"`
		Config struct {
			Version      int     `json:"version"`
			RegistryHash string  `json:"registryHash"`
			Uptime       float64 `json:"uptime"`
		} `json:"config"`
		Connections struct {
			WebSocket *int     `json:"websocket"`
			Uptime    *float64 `json:"uptime"`
		} `json:"connections"`
		Timestamp int64 `json:"timestamp"`
		BPF       struct {
			Mode       string   `json:"mode"`
			Interfaces []string `json:"interfaces"`
		} `json:"bpf"`
		Subsystems struct {
			Proxy, Upstreams, Cache, Kernel, ConfigPlane struct{ Status, Detail string }
		} `json:"subsystems"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	// No interfaces under agent.bpf auto: serving, every check in
	// userspace: degraded, and the kernel part says why.
	if h.Status != "degraded" || h.Subsystems.Kernel.Status != "degraded" || !strings.Contains(h.Subsystems.Kernel.Detail, "no interfaces") ||
		h.Subsystems.Proxy.Status != "ok" || h.Subsystems.Upstreams.Status != "ok" || h.Subsystems.Cache.Status != "off" ||
		h.Subsystems.ConfigPlane.Status != "ok" || h.Config.Version != 1 || h.Config.RegistryHash != "0xa1b2c3d4" ||
		h.Connections.WebSocket == nil || h.Connections.Uptime == nil || h.Timestamp == 0 ||
		h.BPF.Mode != "userspace" || h.BPF.Interfaces == nil {
		t.Fatalf("health %s", body)
	}
}

func TestReadyzConfigAndMetrics(t *testing.T) {
	a := startAgent(t, config.Default())
	if code, _ := get(t, a, "/readyz"); code != 200 {
		t.Fatalf("/readyz %d", code)
	}
	code, body := get(t, a, "/api/config")
	if code != 200 || !strings.Contains(body, `"dump":"0x01a1b2c3d40000000702185000"`) || !strings.Contains(body, `"registryHash":"0xa1b2c3d4"`) {
		t.Fatalf("/api/config %d %s", code, body)
	}
	code, body = get(t, a, "/metrics")
	if code != 200 || !strings.Contains(body, `regedge_bpf_mode{mode="userspace"} 1`) || !strings.Contains(body, `regedge_bpf_mode{mode="kernel"} 0`) {
		t.Fatalf("/metrics %d:\n%s", code, body)
	}
}

func TestBPFRequiredFailsWithoutDatapath(t *testing.T) {
	cfg := config.Default()
	cfg.Agent.BPF = "required"
	if _, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); !errors.Is(err, ErrBPFRequired) {
		t.Fatalf("New = %v, want ErrBPFRequired", err)
	}
}

func TestInvalidConfigRefused(t *testing.T) {
	cfg := config.Default()
	cfg.Config.Rows = 0
	if _, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("New accepted rows=0")
	}
}

func put(t *testing.T, a *Agent, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+a.AdminAddr().String()+"/api/config", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminPutConfig(t *testing.T) {
	a := startAgent(t, config.Default())
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"set":{"rows":40,"registryHash":"0xdeadbeef"}}`, 200, `"dump":"0x01deadbeef0000000702285000"`},
		{`{"dump":"0x01a1b2c3d40000000702185000"}`, 200, `"dump":"0x01a1b2c3d40000000702185000"`},
		{`{"set":{"rows":0}}`, 400, `"field":"rows"`},
		{`{"set":{"bogus":1}}`, 400, `"field":"bogus"`},
		{`{"set":{"version":2}}`, 403, `"rule":"version"`},
		{`{"dump":"0x01"}`, 400, `"field":"dump"`},
		{`{"dump":"0x01a1b2c3d40000000702185000","set":{"rows":3}}`, 400, `give either dump or set`},
		{`{"other":1}`, 400, `unknown field`},
	} {
		t.Run(tc.body, func(t *testing.T) {
			before := a.State()
			code, body := put(t, a, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("PUT %s: %d %s; want %d with %s", tc.body, code, body, tc.code, tc.want)
			}
			if code != 200 && a.State() != before {
				t.Errorf("PUT %s: refused but the state changed", tc.body)
			}
		})
	}
}

// TestBusChangesStateAndItPersists: a datagram to the agent's bus socket
// changes the state, the answer carries it, and a new agent restores it.
func TestBusChangesStateAndItPersists(t *testing.T) {
	cfg := config.Default()
	cfg.Agent.StateFile = filepath.Join(t.TempDir(), "state")
	a := startAgent(t, cfg)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f := codec.Resize(40, 120)
	bus := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: a.BusAddr().(*net.UDPAddr).Port}
	if _, err := conn.WriteToUDP(codec.AppendDatagram(nil, codec.DefaultState(), &f), bus); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	d, err := codec.DecodeDatagram(buf[:n], &codec.DefaultVersions)
	if err != nil || d.Frame.Type != codec.TypeAck || d.Sender.Rows != 40 || d.Sender.Cols != 120 || a.State() != d.Sender {
		t.Fatalf("answer %+v, %v; state %v", d, err, a.State())
	}
	b := startAgent(t, cfg) // a restart, as far as the state file is concerned
	if b.State() != d.Sender {
		t.Fatalf("restored %v, want %v", b.State(), d.Sender)
	}
}

// TestWebSocketInTheAgent: the agent's WebSocket listener shares the state
// with the bus and the admin API, and /health counts its clients.
func TestWebSocketInTheAgent(t *testing.T) {
	a := startAgent(t, config.Default())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+a.WebSocketAddr().String()+wsconfig.Path, &websocket.DialOptions{Subprotocols: []string{wsconfig.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, b, err := c.Read(ctx); err != nil || len(b) != codec.StateSize {
		t.Fatalf("first message %x, %v", b, err)
	}
	f := codec.Update(codec.FieldCols, 132)
	if err := c.Write(ctx, websocket.MessageBinary, f.Bytes()); err != nil {
		t.Fatal(err)
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fr, _ := codec.DecodeFrame(b); fr.Type == codec.TypeAck {
			break
		}
	}
	if a.State().Cols != 132 {
		t.Fatalf("state %v", a.State())
	}
	if _, body := get(t, a, "/health"); !strings.Contains(body, `"websocket":1`) {
		t.Fatalf("/health %s", body)
	}
}

func TestReloadAppliesTheFileState(t *testing.T) {
	a := startAgent(t, config.Default())
	c := config.Default()
	c.Config.Rows = 60
	if err := a.Reload(c); err != nil || a.State().Rows != 60 {
		t.Fatalf("Reload: %v, state %v", err, a.State())
	}
	bad := config.Default()
	bad.Config.TerminalMode = 9
	if err := a.Reload(bad); err == nil || a.State().Rows != 60 || a.State().TerminalMode != 2 {
		t.Fatalf("a bad reload: %v, state %v", err, a.State())
	}
	if _, body := get(t, a, "/metrics"); !strings.Contains(body, `regedge_config_updates_total{source="file"} 1`) {
		t.Fatal("the reload was not counted as source file")
	}
}

// rawRequest sends raw bytes to addr and returns the status line answered.
func rawRequest(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, raw)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "closed: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// TestProxyOnlyAndHostileRequests: regedge proxy start serves the proxy and
// admin alone; oversized headers and conflicting lengths are refused before
// any check or upstream work, and a request with both Content-Length and
// Transfer-Encoding reaches the upstream once, with one framing, so nothing
// can be smuggled behind it.
func TestProxyOnlyAndHostileRequests(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s cl=%q te=%v body=%q", r.Method, r.URL.Path, r.Header.Get("Content-Length"), r.TransferEncoding, body))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer upstream.Close()
	port := upstream.Listener.Addr().(*net.TCPAddr).Port
	cfg := config.Default()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Proxy.ListenHost, cfg.Proxy.ListenPort = "127.0.0.1", 0
	cfg.Proxy.Upstreams = []config.Upstream{{Host: "127.0.0.1", Port: port, Hash: 0xa1b2c3d4}}
	a, cancel, done := serveProxyOnly(t, cfg)
	defer func() { cancel(); <-done }()
	if a.WebSocketAddr() != nil || a.BusAddr() != nil || a.BPFMode() != "userspace" {
		t.Fatalf("proxy start opened ws %v bus %v, mode %s", a.WebSocketAddr(), a.BusAddr(), a.BPFMode())
	}
	addr := a.ProxyAddr().String()
	for _, tc := range []struct{ name, raw, want string }{
		{"plain request", "GET /-/ping HTTP/1.1\r\nHost: e\r\n\r\n", "HTTP/1.1 204"},
		{"two Content-Lengths", "POST /x HTTP/1.1\r\nHost: e\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd", "HTTP/1.1 400"},
		{"oversized headers", "GET /x HTTP/1.1\r\nHost: e\r\nX-Big: " + strings.Repeat("a", 128<<10) + "\r\n\r\n", "HTTP/1.1 431"},
		{"CL and TE, a second request hidden in the body",
			"POST /first HTTP/1.1\r\nHost: e\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: e\r\n\r\n", "HTTP/1.1 204"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rawRequest(t, addr, tc.raw); !strings.HasPrefix(got, tc.want) {
				t.Errorf("%s: %q, want %s", tc.name, got, tc.want)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if strings.Contains(s, "/smuggled") || strings.Contains(s, "/x") {
			t.Errorf("the upstream saw %s", s)
		}
	}
	if len(seen) != 2 {
		t.Errorf("the upstream saw %d requests (%q), want the ping and /first", len(seen), seen)
	}
}

// TestShutdownLetsInFlightRequestsFinishAndSlowlorisIsCut: a request in
// flight when the agent is told to stop completes; a client that dribbles
// its head is disconnected after proxy.headerTimeout.
func TestShutdownLetsInFlightRequestsFinishAndSlowlorisIsCut(t *testing.T) {
	arrived := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		time.Sleep(300 * time.Millisecond) // a slow upstream, not a wait in the test
		io.WriteString(w, "done")
	}))
	defer upstream.Close()
	cfg := config.Default()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Proxy.ListenHost, cfg.Proxy.ListenPort = "127.0.0.1", 0
	cfg.Proxy.HeaderTimeout = 300
	cfg.Proxy.Upstreams = []config.Upstream{{Host: "127.0.0.1", Port: upstream.Listener.Addr().(*net.TCPAddr).Port, Hash: 0xa1b2c3d4}}
	a, cancel, done := serveProxyOnly(t, cfg)
	addr := a.ProxyAddr().String()

	// Slowloris: part of a head, then nothing.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost: e\r\nX-A: ")
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := slow.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a dribbling client was not cut off: %v", err)
	}

	result := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/left-pad")
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	<-arrived
	cancel() // what SIGTERM does
	if got := <-result; got != "200 done" {
		t.Fatalf("in-flight request: %s", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// serveInBackground runs a.Serve until cancel; done gets its result.
func serveInBackground(a *Agent) (cancel context.CancelFunc, done chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	return cancel, done
}

// serveProxyOnly starts `regedge proxy start` in-process; the caller stops
// it with cancel and reads Serve's result from done.
func serveProxyOnly(t *testing.T, cfg *config.Config) (*Agent, context.CancelFunc, chan error) {
	t.Helper()
	a, err := NewProxyOnly(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	cancel, done := serveInBackground(a)
	return a, cancel, done
}

// TestUpstreamAuthWithoutTokensRefusedAtStart: the agent does not start
// with an upstream credential it would lend to every client, and says why.
func TestUpstreamAuthWithoutTokensRefusedAtStart(t *testing.T) {
	cfg := config.Default()
	cfg.Agent.BPF = "off"
	cfg.Proxy.Upstreams[0].Auth = &config.Auth{TokenFile: "/nonexistent/token"}
	_, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "proxy.upstreams[0].auth" || !strings.Contains(err.Error(), "tokens.publicKeys") {
		t.Fatalf("New = %v, want a config error on proxy.upstreams[0].auth naming tokens.publicKeys", err)
	}
}
