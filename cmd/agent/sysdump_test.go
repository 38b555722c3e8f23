package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
)

// readBundle returns a sysdump's files by name.
func readBundle(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[strings.TrimPrefix(h.Name, "regedge-sysdump/")] = string(b)
	}
}

// TestSysdump: a bundle from a running agent holds its health, state,
// effective config (the upstream credential's file named, its content
// nowhere), metrics, recent log lines and the bpf status; what could not
// be had (no pins here) is said in errors.txt. With the agent gone, a
// bundle is still written, saying so.
func TestSysdump(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	port, _ := strconv.Atoi(u.Port())
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "upstream-token")
	os.WriteFile(secretFile, []byte("s3cret-upstream-credential\n"), 0o600)
	cfg := config.Default()
	cfg.Admin.Listen, cfg.Bus.Port, cfg.WebSocket.Port, cfg.Proxy.ListenPort = "127.0.0.1:0", 0, 0, 0
	cfg.Agent.BPF = "off"
	cfg.Proxy.Upstreams = []config.Upstream{{Host: u.Hostname(), Port: port, Hash: 0, Auth: &config.Auth{TokenFile: secretFile}}}
	// An upstream credential needs client tokens (the edge must not lend it).
	_, pub, err := token.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tokens.PublicKeys = []string{pub}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *agent.Agent, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveUntil(ctx, io.Discard, "", cfg, []string{"telemetry"}, agent.New, func(a *agent.Agent) { ready <- a })
	}()
	var a *agent.Agent
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("the agent did not start: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "agent ready", a.Ready)
	admin := a.AdminAddr().String()

	out := filepath.Join(dir, "bundle.tar.gz")
	stdout, errs, code := run(t, "", "sysdump", "--from", admin, "--out", out, "--bpffs", t.TempDir())
	if code != 0 || !strings.Contains(stdout, "wrote "+out) {
		t.Fatalf("sysdump: exit %d %s %s", code, stdout, errs)
	}
	files := readBundle(t, out)
	for _, name := range []string{"version.txt", "health.json", "readyz.json", "state.json", "config.json", "metrics.txt", "logs.jsonl", "bpf-status.txt", "errors.txt"} {
		if files[name] == "" {
			t.Errorf("bundle lacks %s (has %d files)", name, len(files))
		}
	}
	var eff config.Config
	if err := json.Unmarshal([]byte(files["config.json"]), &eff); err != nil || eff.Proxy.Upstreams[0].Auth.TokenFile != secretFile {
		t.Fatalf("config.json: %v %s", err, files["config.json"])
	}
	for name, body := range files {
		if strings.Contains(body, "s3cret-upstream-credential") {
			t.Errorf("%s holds the upstream credential", name)
		}
	}
	if !strings.Contains(files["logs.jsonl"], "config file has keys this build does not know") || !strings.Contains(files["logs.jsonl"], "agent started") {
		t.Errorf("logs.jsonl:\n%s", files["logs.jsonl"])
	}
	if !strings.Contains(files["health.json"], `"subsystems"`) || !strings.Contains(files["metrics.txt"], "regedge_build_info") ||
		!strings.Contains(files["version.txt"], "agent: regedge_build_info") || !strings.Contains(files["errors.txt"], "blocklist.txt") {
		t.Errorf("bundle: health %q\nversion %q\nerrors %q", files["health.json"], files["version.txt"], files["errors.txt"])
	}

	cancel()
	<-done
	out2 := filepath.Join(dir, "down.tar.gz")
	if _, errs, code := run(t, "", "sysdump", "--from", admin, "--out", out2, "--bpffs", t.TempDir()); code != 0 || !strings.Contains(errs, "health.json") {
		t.Fatalf("sysdump with the agent down: exit %d %s", code, errs)
	}
	if files := readBundle(t, out2); !strings.Contains(files["errors.txt"], "health.json") || files["version.txt"] == "" {
		t.Fatalf("bundle with the agent down: %v", files)
	}
}
