package userproxy

import (
	"context"
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

// bunVersion is the Bun the test installs from the npm registry's
// @oven/bun-linux-x64 package, which ships the binary.
const bunVersion = "1.4.4"

// bunBinary returns a Bun binary, installing it once into a cache directory
// shared by test runs.
func bunBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("bun"); err == nil {
		return p
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "neither bun nor npm is installed (.ci/run installs nodejs and npm)")
	}
	dir := filepath.Join(os.TempDir(), "regedge-bun-"+bunVersion)
	bin := filepath.Join(dir, "node_modules", "@oven", "bun-linux-x64", "bin", "bun")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	os.MkdirAll(dir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--loglevel=warn", "--prefix", dir, "@oven/bun-linux-x64@"+bunVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("installing Bun from the npm registry failed: %v\n%s", err, out))
	}
	return bin
}

// TestBunInstallThroughTheEdge: the seed's runtime installs the scoped
// package and its dependency through the edge with the token from bunfig.toml.
func TestBunInstallThroughTheEdge(t *testing.T) {
	bun := bunBinary(t)
	e := newEdge(t, func(c *Config) {
		c.Upstreams = append(c.Upstreams, Upstream{Hash: 0, URL: c.Upstreams[0].URL})
	})
	tok := e.token(t, "0xa1b2c3d4", "0x00000000")
	dir := t.TempDir()
	proj := filepath.Join(dir, "proj")
	os.MkdirAll(proj, 0o700)
	os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"proj","version":"1.0.0","private":true,"dependencies":{"@mycompany/hello":"^1.2.3"}}`), 0o644)
	os.WriteFile(filepath.Join(proj, "bunfig.toml"), []byte(fmt.Sprintf("[install]\nregistry = { url = %q, token = %q }\n", e.URL+"/", tok)), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bun, "install", "--no-progress")
	cmd.Dir = proj
	cmd.Env = append(os.Environ(), "HOME="+filepath.Join(dir, "home"), "BUN_INSTALL_CACHE_DIR="+filepath.Join(dir, "cache"), "DO_NOT_TRACK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bun install: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(proj, "node_modules", "hello-dep", "index.js"))
	if err != nil || !strings.Contains(string(got), "dep") {
		t.Fatalf("hello-dep not installed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(proj, "node_modules", "@mycompany", "hello", "index.js")); err != nil {
		t.Fatal(err)
	}
	if n := promtest.ToFloat64(e.proxy.handedOn); n != 0 {
		t.Errorf("%v of bun's connections were handed to net/http", n)
	}
	_, seen := e.reg.Requests()
	for i, h := range seen {
		if h.Get("Authorization") != "Bearer upstream-secret" {
			t.Fatalf("request %d upstream carried Authorization %q", i, h.Get("Authorization"))
		}
	}
}
