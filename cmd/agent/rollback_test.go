package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newerConfig is a config written for a newer regedge: keys this build
// does not know, beside ones it does.
const newerConfig = `{
  "agent": {"bpf": "off", "futureMode": "x"},
  "admin": {"listen": "127.0.0.1:0"},
  "proxy": {"listenHost": "127.0.0.1", "listenPort": 0, "perClientPerMinute": 60},
  "websocket": {"port": 0},
  "bus": {"listenHost": "127.0.0.1", "port": 0},
  "fleet": {"listen": "127.0.0.1:0"},
  "telemetry": {"endpoint": "https://otel.example"}
}`

// TestOldBinaryStartsOnANewConfig runs `regedge run` (this build, the
// "old binary") on a newer config: it starts, says which keys it ignored,
// and `config validate` refuses the same file.
func TestOldBinaryStartsOnANewConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "newer.json")
	if err := os.WriteFile(file, []byte(newerConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "run", "--config", file)
	cmd.Env = append(os.Environ(), "REGEDGE_TEST_RUN_CLI=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	lines := make(chan map[string]any, 1024) // the reader never blocks once the test stops reading
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
	}()
	var warned, started bool
	admin := ""
	timeout := time.After(20 * time.Second)
	for !(warned && started) {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatalf("the agent exited (warned %v, started %v)", warned, started)
			}
			if strings.HasPrefix(m["msg"].(string), "config file has keys this build does not know") {
				keys, _ := json.Marshal(m["keys"])
				if string(keys) != `["agent.futureMode","proxy.perClientPerMinute","telemetry"]` {
					t.Fatalf("ignored keys %s", keys)
				}
				warned = true
			}
			if m["msg"] == "agent started" {
				started, admin = true, m["admin"].(string)
			}
		case <-timeout:
			t.Fatalf("no start within 20 s (warned %v, started %v)", warned, started)
		}
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if v := metricLine(string(page), "regedge_config_unknown_keys"); v != "3" {
		t.Fatalf("regedge_config_unknown_keys %q", v)
	}
	out, errs, code := run(t, "", "config", "validate", file)
	if code != 1 || !strings.Contains(errs, "unknown key") || !strings.Contains(errs, "agent.futureMode, proxy.perClientPerMinute, telemetry") {
		t.Fatalf("validate of the newer file: exit %d %s %s", code, out, errs)
	}
	good := filepath.Join(t.TempDir(), "good.json")
	os.WriteFile(good, []byte(`{"proxy": {"listenPort": 4999}}`), 0o600)
	if out, errs, code := run(t, "", "config", "validate", good); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("validate of a good file: exit %d %s %s", code, out, errs)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"agent": {"bpf": "sometimes"}}`), 0o600)
	if _, errs, code := run(t, "", "config", "validate", bad); code != 1 || !strings.Contains(errs, "agent.bpf") {
		t.Fatalf("validate of a bad value: exit %d %s", code, errs)
	}
}
