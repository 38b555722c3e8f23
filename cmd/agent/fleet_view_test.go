package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/agent"
)

// deadTargets returns n loopback UDP addresses nobody listens on.
func deadTargets(t *testing.T, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c.LocalAddr().String())
		c.Close()
	}
	return out
}

func busOf(a *agent.Agent) string {
	return fmt.Sprintf("127.0.0.1:%d", a.BusAddr().(*net.UDPAddr).Port)
}

// TestFleetViewGroupsByState: a push to 2 agents and 20 dead targets (from
// --targets-file) lists only the 20 that did not converge and groups the
// rest by state; --json says the same for scripts; config get --bus reads
// the states back without changing them.
func TestFleetViewGroupsByState(t *testing.T) {
	a, b := runningAgent(t), runningAgent(t)
	dead := deadTargets(t, 20)
	file := filepath.Join(t.TempDir(), "nodes.txt")
	body := "# the fleet\n" + busOf(a) + "\n\n" + busOf(b) + "  # b\n" + strings.Join(dead, "\n") + "\n" + busOf(a) + "\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code := run(t, "", "config", "push", "--targets-file", file, "--deadline", "300ms", "--retry", "50ms", "rows=40")
	if code != 1 || !strings.Contains(errs, "20 of 22 targets did not converge") {
		t.Fatalf("push: exit %d %s\n%s", code, errs, out)
	}
	const want = "0x01a1b2c3d40000000702285000"
	if strings.Count(out, "no answer within") != 20 || strings.Contains(out, busOf(a)+"  ") || !strings.Contains(out, "(2 more targets are fine and not listed") ||
		!hasRow(out, want, "2", "2") || !hasRow(out, "(no", "answer)", "20", "0") {
		t.Fatalf("push table:\n%s", out)
	}
	out, _, code = run(t, "", "config", "push", "--targets-file", file, "--deadline", "300ms", "--retry", "50ms", "--json", "rows=40")
	var rep fleetReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 {
		t.Fatalf("push --json: exit %d %v\n%s", code, err, out)
	}
	if rep.Command != "push" || rep.Total != 22 || *rep.Converged != 2 || rep.Answered != 2 || len(rep.Results) != 22 ||
		len(rep.Groups) != 2 || rep.Groups[0].State != want || rep.Groups[0].Agents != 2 || rep.Groups[1].State != "" || rep.Groups[1].Agents != 20 {
		t.Fatalf("push --json: %+v", rep)
	}
	// Read-only: a different state on b, read back over the bus.
	s := b.State()
	s.Cols = 120
	if _, err := b.SetState(s); err != nil {
		t.Fatal(err)
	}
	out, errs, code = run(t, "", "config", "get", "--bus", busOf(a)+","+busOf(b), "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || rep.Command != "get" || rep.Answered != 2 || len(rep.Groups) != 2 ||
		rep.Results[0].Reported != want || rep.Results[1].Reported != s.Dump() {
		t.Fatalf("get --bus --json: exit %d %v %s\n%s", code, err, errs, out)
	}
	if a.State().Dump() != want || b.State() != s {
		t.Fatal("config get changed a state")
	}
	out, errs, code = run(t, "", "config", "get", "--bus", busOf(a)+","+dead[0], "--deadline", "300ms")
	if code != 1 || !strings.Contains(out, dead[0]) || !strings.Contains(out, "(no answer)") || !strings.Contains(errs, "1 of 2 targets did not answer") {
		t.Fatalf("get --bus with a dead target: exit %d %s\n%s", code, errs, out)
	}
	if _, _, code = run(t, "", "config", "get", "--from", "127.0.0.1:1", "--bus", busOf(a)); code != 2 {
		t.Fatalf("--from with --bus: exit %d", code)
	}
	bad := filepath.Join(t.TempDir(), "bad.txt")
	os.WriteFile(bad, []byte("10.0.0.1:4874 10.0.0.2:4874\n"), 0o600)
	if _, errs, code = run(t, "", "config", "push", "--targets-file", bad, "rows=40"); code != 2 || !strings.Contains(errs, "bad.txt:1") {
		t.Fatalf("a malformed targets file: exit %d %s", code, errs)
	}
}

// hasRow: a line of out starts with these fields.
func hasRow(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}
