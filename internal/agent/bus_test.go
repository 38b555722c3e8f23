package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/configbus"
)

func writeBusKey(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bus.pub")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBusKeyFileThatDoesNotParseStopsTheAgent: New fails, naming the key
// and the file, and nothing is left listening.
func TestBusKeyFileThatDoesNotParseStopsTheAgent(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bus.pub")
	if err := os.WriteFile(bad, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{bad, filepath.Join(t.TempDir(), "missing.pub")} {
		cfg := config.Default()
		cfg.Bus.PublicKeys = []string{file}
		a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		var ce *config.Error
		if a != nil || !errors.As(err, &ce) || ce.Key != "bus.publicKeys[0]" || !strings.Contains(err.Error(), file) {
			t.Fatalf("%s: New = %v, %v; want an error naming bus.publicKeys[0] and the file", file, a, err)
		}
	}
}

// TestBusListenHost: the bus binds bus.listenHost only.
func TestBusListenHost(t *testing.T) {
	cfg := config.Default()
	cfg.Bus.ListenHost = "127.0.0.1"
	a := startAgent(t, cfg)
	if got := a.BusAddr().(*net.UDPAddr); !got.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("bus bound %v, want 127.0.0.1", got)
	}
	def := startAgent(t, config.Default())
	if got := def.BusAddr().(*net.UDPAddr); !got.IP.IsUnspecified() {
		t.Fatalf("default bus bound %v, want every address", got)
	}
}

// TestSignedBusInTheAgent: with bus.publicKeys the agent applies a signed
// push and refuses an unsigned one in silence.
func TestSignedBusInTheAgent(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x44}, ed25519.SeedSize))
	cfg := config.Default()
	cfg.Bus.PublicKeys = []string{writeBusKey(t, key)}
	a := startAgent(t, cfg)
	target := net.JoinHostPort("127.0.0.1", portOf(t, a.BusAddr()))
	entries := []codec.Entry{{Field: codec.FieldRows, Value: 40}}
	res, err := configbus.Push(context.Background(), []string{target}, configbus.PushOptions{
		Sender: codec.DefaultState(), Entries: entries, Deadline: 300 * time.Millisecond, Retry: 50 * time.Millisecond,
	})
	if err != nil || res[0].Converged || res[0].HasReport || a.State().Rows != 24 {
		t.Fatalf("unsigned push: %+v %v, state %v", res, err, a.State())
	}
	res, err = configbus.Push(context.Background(), []string{target}, configbus.PushOptions{
		Sender: codec.DefaultState(), Entries: entries, Key: key,
	})
	if err != nil || !res[0].Converged || a.State().Rows != 40 {
		t.Fatalf("signed push: %+v %v, state %v", res, err, a.State())
	}
	_, body := get(t, a, "/metrics")
	for _, line := range []string{`regedge_bus_datagrams_total{verdict="ok"} 1`, `regedge_bus_trailers_ignored_total 0`} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	if !strings.Contains(body, `regedge_bus_datagrams_total{verdict="unsigned"}`) || strings.Contains(body, `regedge_bus_datagrams_total{verdict="unsigned"} 0`+"\n") {
		t.Error("the unsigned attempts were not counted")
	}
}

func portOf(t *testing.T, a net.Addr) string {
	t.Helper()
	_, port, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}
