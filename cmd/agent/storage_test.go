package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
)

// storageMetric reads regedge_bus_datagrams_total{verdict="storage"} from
// the agent's /metrics.
func storageMetric(t *testing.T, a *agent.Agent) string {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^regedge_bus_datagrams_total\{verdict="storage"\} (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no storage verdict in /metrics")
	}
	return string(m[1])
}

// The agent's state directory breaks: `config set` says so (not "refused
// field"), and `config push` keeps retrying until it is repaired, then
// converges.
func TestConfigPushRetriesOnStorage(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "statedir")
	a := runningAgentWith(t, func(c *config.Config) { c.Agent.StateFile = filepath.Join(sub, "state") })
	// A regular file takes the state directory's name: it cannot be
	// created, whoever runs the test.
	if err := os.WriteFile(sub, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	_, errs, code := run(t, "", "config", "set", "rows", "40", "--to", a.AdminAddr().String())
	if code != 1 || !strings.Contains(errs, "507") || !strings.Contains(errs, "could not persist") || a.State().Rows != 24 {
		t.Fatalf("config set with a broken state directory: exit %d %q, state %v", code, errs, a.State())
	}

	bus := fmt.Sprintf("127.0.0.1:%d", a.BusAddr().(*net.UDPAddr).Port)
	type result struct {
		out, errs string
		code      int
	}
	pushed := make(chan result, 1)
	go func() {
		out, errs, code := run(t, "", "config", "push", "--to", bus, "--deadline", "30s", "--retry", "50ms", "rows=40", "cols=120")
		pushed <- result{out, errs, code}
	}()
	testutil.Eventually(t, 10*time.Second, "a storage answer", func() bool { return storageMetric(t, a) != "0" })
	if a.State().Rows != 24 {
		t.Fatalf("state %v while the disk is broken", a.State())
	}
	if err := os.Remove(sub); err != nil {
		t.Fatal(err)
	}
	r := <-pushed
	if r.code != 0 || !strings.Contains(r.out, "0x01a1b2c3d40000000702287800") || !strings.Contains(r.out, " yes ") {
		t.Fatalf("push: exit %d %s\n%s", r.code, r.errs, r.out)
	}
	if a.State().Rows != 40 || a.State().Cols != 120 {
		t.Fatalf("state %v", a.State())
	}
	if b, err := os.ReadFile(filepath.Join(sub, "state")); err != nil || !strings.Contains(string(b), a.State().Dump()) {
		t.Fatalf("state file %q, %v", b, err)
	}
}
