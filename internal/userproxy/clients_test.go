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

	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/testutil"
)

// pnpmVersion is the pnpm the test installs from the npm registry.
const pnpmVersion = "9.8.0"

// pnpmScript returns pnpm's entry script, installed once into a cache
// directory shared by test runs.
func pnpmScript(t *testing.T) string {
	t.Helper()
	return installedWithNpm(t, "pnpm@"+pnpmVersion, "node_modules/pnpm/bin/pnpm.cjs")
}

// TestRealClientsInstallThroughTheEdge: npm, pnpm and bun, each with the
// edge cache off and on, install a scoped package and its dependency
// through the edge with a token; the packuments they read point every
// tarball at the edge (so the tarballs come through it: the upstream sees
// them asked by the edge), their lockfiles name the edge or no host, and
// only the edge's credential reaches the upstream.
func TestRealClientsInstallThroughTheEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real clients")
	}
	clients := []struct {
		name    string
		prepare func(ctx context.Context, t *testing.T, proj, home, url, hostPort, tok string) *exec.Cmd
		lock    string
	}{
		{"npm", func(ctx context.Context, t *testing.T, proj, home, url, hostPort, tok string) *exec.Cmd {
			npm, err := exec.LookPath("npm")
			if err != nil {
				testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
			}
			os.WriteFile(filepath.Join(proj, ".npmrc"), []byte(fmt.Sprintf("registry=%s/\n//%s/:_authToken=%s\n", url, hostPort, tok)), 0o600)
			cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn")
			cmd.Env = append(os.Environ(), "npm_config_cache="+filepath.Join(home, "cache"), "npm_config_userconfig="+filepath.Join(home, ".npmrc"))
			return cmd
		}, "package-lock.json"},
		{"pnpm", func(ctx context.Context, t *testing.T, proj, home, url, hostPort, tok string) *exec.Cmd {
			script := pnpmScript(t)
			os.WriteFile(filepath.Join(proj, ".npmrc"), []byte(fmt.Sprintf("registry=%s/\n//%s/:_authToken=%s\n", url, hostPort, tok)), 0o600)
			cmd := exec.CommandContext(ctx, "node", script, "install", "--store-dir", filepath.Join(home, "store"), "--reporter=append-only")
			cmd.Env = append(os.Environ(), "npm_config_userconfig="+filepath.Join(home, ".npmrc"), "XDG_CACHE_HOME="+filepath.Join(home, "cache"))
			return cmd
		}, "pnpm-lock.yaml"},
		{"bun", func(ctx context.Context, t *testing.T, proj, home, url, hostPort, tok string) *exec.Cmd {
			bun := bunBinary(t)
			os.WriteFile(filepath.Join(proj, "bunfig.toml"), []byte(fmt.Sprintf("[install]\nregistry = { url = %q, token = %q }\n", url+"/", tok)), 0o600)
			cmd := exec.CommandContext(ctx, bun, "install", "--no-progress", "--save-text-lockfile")
			cmd.Env = append(os.Environ(), "BUN_INSTALL_CACHE_DIR="+filepath.Join(home, "cache"), "DO_NOT_TRACK=1")
			return cmd
		}, "bun.lock"},
	}
	for _, cl := range clients {
		for _, cached := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/cache=%v", cl.name, cached), func(t *testing.T) {
				var c *edgecache.Cache
				e := newEdge(t, func(cfg *Config) {
					// One upstream serves both packages; unscoped ones reach it as the fallback.
					cfg.Upstreams = append(cfg.Upstreams, Upstream{Hash: 0, URL: cfg.Upstreams[0].URL})
					if cached {
						var err error
						if c, err = edgecache.Open(t.TempDir(), 1<<26, edgecache.Options{}); err != nil {
							t.Fatal(err)
						}
						cfg.Cache, cfg.PackumentTTL, cfg.NegativeTTL = c, time.Hour, time.Minute
					}
				})
				tok := e.token(t, "0xa1b2c3d4", "0x00000000")
				dir := t.TempDir()
				home, proj := filepath.Join(dir, "home"), filepath.Join(dir, "proj")
				os.MkdirAll(home, 0o700)
				os.MkdirAll(proj, 0o700)
				os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"proj","version":"1.0.0","private":true,"dependencies":{"@mycompany/hello":"^1.2.3"}}`), 0o644)
				hostPort := strings.TrimPrefix(e.URL, "http://")
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := cl.prepare(ctx, t, proj, home, e.URL, hostPort, tok)
				cmd.Dir = proj
				cmd.Env = append(cmd.Env, "HOME="+home)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s install: %v\n%s", cl.name, err, out)
				}
				run := exec.CommandContext(ctx, "node", "-e", "process.stdout.write(require('@mycompany/hello'))")
				run.Dir = proj
				if got, err := run.Output(); err != nil || string(got) != "dep hello" {
					t.Fatalf("the installed package says %q (%v)", got, err)
				}
				lock, err := os.ReadFile(filepath.Join(proj, cl.lock))
				if err != nil {
					t.Fatal(err)
				}
				upstreamHost := strings.TrimPrefix(e.reg.URL, "http://")
				if strings.Contains(string(lock), upstreamHost) {
					t.Errorf("%s names the upstream %s:\n%s", cl.lock, upstreamHost, lock)
				}
				if cl.name == "npm" {
					var lf struct {
						Packages map[string]struct{ Resolved, Integrity string } `json:"packages"`
					}
					json.Unmarshal(lock, &lf)
					for _, name := range []string{"node_modules/@mycompany/hello", "node_modules/hello-dep"} {
						if p := lf.Packages[name]; !strings.HasPrefix(p.Resolved, e.URL+"/") || !strings.HasPrefix(p.Integrity, "sha512-") {
							t.Errorf("%s: resolved %q integrity %q; want the edge's URL", name, p.Resolved, p.Integrity)
						}
					}
				}
				// The tarballs came through the edge: the upstream was asked
				// for them, with the edge's credential only.
				paths, seen := e.reg.Requests()
				tarballs := 0
				for i, h := range seen {
					if h.Get("Authorization") != "Bearer upstream-secret" {
						t.Fatalf("request %d upstream carried Authorization %q", i, h.Get("Authorization"))
					}
					if strings.HasSuffix(paths[i], ".tgz") {
						tarballs++
					}
				}
				if tarballs != 2 {
					t.Errorf("the upstream was asked for %d tarballs, want 2: %v", tarballs, paths)
				}
				if n := promtest.ToFloat64(e.proxy.handedOn); n != 0 {
					t.Errorf("%v of %s's connections were handed to net/http", n, cl.name)
				}
				if cached && promtest.ToFloat64(c.Misses) < 4 {
					t.Errorf("cache misses %v: the packuments and tarballs did not go through the cache", promtest.ToFloat64(c.Misses))
				}
			})
		}
	}
}
