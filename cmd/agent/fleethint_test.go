package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/testutil"
)

// TestCachePurgeFleet: `cache purge --fleet` purges this host's cache
// through its admin API and sends the hint to every peer but this host's
// agent; the peer revalidates its cached packument at its next request.
// With no peers it says so and exits non-zero.
func TestCachePurgeFleet(t *testing.T) {
	reg := npmfixture.New(t)
	reg.Add(fixturePackage("left-pad", "1.0.0", nil))
	t.Setenv("UPSTREAM_FALLBACK", reg.URL)
	t.Setenv("REGEDGE_CACHE_DIR", t.TempDir())
	a := runningAgent(t)
	t.Setenv("REGEDGE_CACHE_DIR", t.TempDir())
	b := runningAgent(t)
	get := func(base string) *http.Response {
		resp, err := http.Get("http://" + base + "/left-pad")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, base := range []string{a.ProxyAddr().String(), b.ProxyAddr().String()} {
		get(base)
		if resp := get(base); resp.Header.Get("X-Regedge-Cache") != "hit" {
			t.Fatalf("%s: left-pad not cached", base)
		}
	}
	fa, fb := a.FleetAddr().String(), b.FleetAddr().String()
	// The command runs on a's host: its fleet.listen is a's.
	t.Setenv("REGEDGE_FLEET_PEERS", fa+","+fb)
	t.Setenv("REGEDGE_FLEET_LISTEN", fa)
	out, errs, code := run(t, "", "cache", "purge", "--fleet", "left-pad", "--to", a.AdminAddr().String())
	if code != 0 || !strings.Contains(out, "sent the hint for left-pad to 1 of 1 peers: "+fb+"\n") || !strings.Contains(out, "purged 1 entries of left-pad") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	c := http.DefaultClient
	testutil.Eventually(t, 10*time.Second, "b to mark its packument", func() bool { return metric(t, c, b.AdminAddr().String(), markedSeries) == 1 })
	if n := metric(t, c, a.AdminAddr().String(), hintSeries("received", "ok")); n != 0 {
		t.Fatalf("the command sent the hint to its own host's agent too (%v received)", n)
	}
	paths, _ := reg.Requests()
	before := len(paths)
	if resp := get(b.ProxyAddr().String()); resp.Header.Get("X-Regedge-Cache") != "hit" {
		t.Fatalf("b after the hint: %s", resp.Header.Get("X-Regedge-Cache"))
	}
	paths, headers := reg.Requests()
	if len(paths) != before+1 || headers[before].Get("If-None-Match") == "" {
		t.Fatalf("b's next request made %v upstream, want one conditional GET", paths[before:])
	}

	t.Setenv("REGEDGE_FLEET_PEERS", "")
	_, errs, code = run(t, "", "cache", "purge", "--fleet", "left-pad", "--to", a.AdminAddr().String())
	if code == 0 || !strings.Contains(errs, "fleet.peers is empty") {
		t.Fatalf("no peers: exit %d %s", code, errs)
	}
}
