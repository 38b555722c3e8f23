package userproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/testutil"
)

// TestNpmInstallThroughTheEdge: the real npm client installs a scoped
// package and its dependency through the edge, with the token in .npmrc;
// the lockfile's resolved URLs point at the edge.
func TestNpmInstallThroughTheEdge(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	e := newEdge(t, func(c *Config) {
		// One upstream serves both packages; unscoped ones reach it as the fallback.
		c.Upstreams = append(c.Upstreams, Upstream{Hash: 0, URL: c.Upstreams[0].URL})
	})
	tok := e.token(t, "0xa1b2c3d4", "0x00000000")
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	proj := filepath.Join(dir, "proj")
	os.MkdirAll(home, 0o700)
	os.MkdirAll(proj, 0o700)
	hostPort := strings.TrimPrefix(e.URL, "http://")
	npmrc := fmt.Sprintf("registry=%s/\n//%s/:_authToken=%s\n", e.URL, hostPort, tok)
	os.WriteFile(filepath.Join(proj, ".npmrc"), []byte(npmrc), 0o600)
	os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"proj","version":"1.0.0","private":true}`), 0o644)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn", "@mycompany/hello")
	cmd.Dir = proj
	cmd.Env = append(os.Environ(), "HOME="+home, "npm_config_cache="+filepath.Join(dir, "cache"), "npm_config_userconfig="+filepath.Join(home, ".npmrc"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm install: %v\n%s", err, out)
	}
	run := exec.CommandContext(ctx, "node", "-e", "process.stdout.write(require('@mycompany/hello'))")
	run.Dir = proj
	if got, err := run.Output(); err != nil || string(got) != "dep hello" {
		t.Fatalf("the installed package says %q (%v)", got, err)
	}
	lock, err := os.ReadFile(filepath.Join(proj, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	var lf struct {
		Packages map[string]struct {
			Resolved  string `json:"resolved"`
			Integrity string `json:"integrity"`
		} `json:"packages"`
	}
	json.Unmarshal(lock, &lf)
	for _, name := range []string{"node_modules/@mycompany/hello", "node_modules/hello-dep"} {
		p := lf.Packages[name]
		if !strings.HasPrefix(p.Resolved, e.URL+"/") || !strings.HasPrefix(p.Integrity, "sha512-") {
			t.Errorf("%s: resolved %q integrity %q; want the edge's URL", name, p.Resolved, p.Integrity)
		}
	}
	// npm's GETs are what the fast path is for: none went to net/http.
	if n := promtest.ToFloat64(e.proxy.handedOn); n != 0 {
		t.Errorf("%v of npm's connections were handed to net/http", n)
	}
	_, seen := e.reg.Requests()
	if len(seen) < 4 {
		t.Fatalf("the upstream saw %d requests, want packuments and tarballs of both packages", len(seen))
	}
	for i, h := range seen {
		if h.Get("Authorization") != "Bearer upstream-secret" {
			t.Fatalf("request %d upstream carried Authorization %q", i, h.Get("Authorization"))
		}
	}
}
