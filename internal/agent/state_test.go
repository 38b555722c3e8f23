package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/wsconfig"
)

// syncBuffer is a log destination the agent's goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records returns the JSON log records whose msg contains msg.
func (s *syncBuffer) records(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(s.b.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(rec["msg"].(string), msg) {
			out = append(out, rec)
		}
	}
	return out
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startAgentLogged(t *testing.T, cfg *config.Config, logs *syncBuffer) *Agent {
	t.Helper()
	cfg.Admin.Listen, cfg.Bus.Port, cfg.WebSocket.Port, cfg.Proxy.ListenPort = "127.0.0.1:0", 0, 0, 0
	a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	cancel, done := serveInBackground(a)
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// A FIFO (or a dangling symlink) at agent.stateFile stops the start with an
// error naming it; it used to block the agent before it listened, or start
// it silently from the defaults.
func TestStateFileNotRegularStopsTheStart(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // releases a reader blocked on it (the old code)
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	dangling := filepath.Join(dir, "link")
	os.Symlink(filepath.Join(dir, "gone"), dangling)
	for path, want := range map[string]string{fifo: "named pipe", dangling: "dangling symlink"} {
		t.Run(want, func(t *testing.T) {
			cfg := config.Default()
			cfg.Agent.StateFile = path
			errc := make(chan error, 1)
			go func() {
				a, err := New(cfg, quietLog())
				if err == nil {
					a.closeDatapath()
				}
				errc <- err
			}()
			select {
			case err := <-errc:
				var fe *state.FileError
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
					t.Errorf("%s: New = %v; want an error naming it as a %s", path, err, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: New is blocked", path)
			}
		})
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// agent.stateSource decides which state wins at start, and the log says so.
func TestStateSourceInTheAgent(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state")
	persisted := codec.DefaultState()
	persisted.Rows = 50
	a0 := startAgent(t, func() *config.Config { c := config.Default(); c.Agent.StateFile = file; return c }())
	if _, err := a0.SetState(persisted); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	cfg := config.Default()
	cfg.Agent.StateFile = file
	if a := startAgentLogged(t, cfg, &logs); a.State() != persisted {
		t.Fatalf("stateSource file: %v, want the persisted %v", a.State(), persisted)
	}
	if r := logs.records("state file overrides the config file's config section"); len(r) != 1 || r[0]["state"] != persisted.Dump() {
		t.Fatalf("the override is not logged:\n%s", logs.String())
	}

	cfg = config.Default()
	cfg.Agent.StateFile, cfg.Agent.StateSource = file, "config"
	if a := startAgentLogged(t, cfg, &logs); a.State() != codec.DefaultState() {
		t.Fatalf("stateSource config: %v, want the config's", a.State())
	}
	if r := logs.records("overrides the state file"); len(r) != 1 || r[0]["file_state"] != persisted.Dump() {
		t.Fatalf("the config's win is not logged:\n%s", logs.String())
	}
}

// With the state directory broken, each door answers with its own storage
// code, nothing changes, and the log has one ERROR line per door.
func TestStorageFailureOnEveryDoor(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "statedir")
	cfg := config.Default()
	cfg.Agent.StateFile = filepath.Join(sub, "state")
	var logs syncBuffer
	a := startAgentLogged(t, cfg, &logs)
	if err := os.WriteFile(sub, nil, 0o600); err != nil { // the directory cannot be created
		t.Fatal(err)
	}

	// WebSocket.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+a.WebSocketAddr().String()+wsconfig.Path, &websocket.DialOptions{Subprotocols: []string{wsconfig.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.Read(ctx) // the state on connect
	upd := codec.Update(codec.FieldRows, 40)
	if err := c.Write(ctx, websocket.MessageBinary, upd.Bytes()); err != nil {
		t.Fatal(err)
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f, _ := codec.DecodeFrame(b)
		if f.Type == codec.TypeHeartbeat {
			continue
		}
		if f.Type != codec.TypeError || codec.ErrorCode(f.Field) != codec.ErrCodeStorage {
			t.Fatalf("WebSocket answer %+v, want ERROR 6", f)
		}
		break
	}

	// Bus.
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bus := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: a.BusAddr().(*net.UDPAddr).Port}
	conn.WriteToUDP(codec.AppendDatagram(nil, codec.DefaultState(), &upd), bus)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	d, err := codec.DecodeDatagram(buf[:n], &codec.DefaultVersions)
	if err != nil || d.Frame.Type != codec.TypeError || codec.ErrorCode(d.Frame.Field) != codec.ErrCodeStorage || d.Sender != codec.DefaultState() {
		t.Fatalf("bus answer %+v, %v; want ERROR 6 from the unchanged state", d, err)
	}

	// Admin API.
	if code, body := put(t, a, `{"set":{"rows":40}}`); code != 507 || !strings.Contains(body, `"rule":"storage"`) {
		t.Fatalf("PUT: %d %s", code, body)
	}

	if a.State() != codec.DefaultState() {
		t.Fatalf("state %v after three refused changes", a.State())
	}
	sources := map[string]bool{}
	for _, r := range logs.records("the state file could not be written") {
		if r["level"] == "ERROR" {
			sources[r["source"].(string)] = true
		}
	}
	if !sources["ws"] || !sources["bus"] || !sources["cli"] {
		t.Fatalf("ERROR lines by source %v:\n%s", sources, logs.String())
	}
	if _, body := get(t, a, "/metrics"); !strings.Contains(body, `regedge_bus_datagrams_total{verdict="storage"} 1`) {
		t.Fatal("the bus's storage verdict is not counted")
	}
}
