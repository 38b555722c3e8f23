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

	"github.com/regedge/regedge/internal/testutil"
)

// The yarns the tests install from the npm registry: yarn 1 (classic) and
// yarn 4 (berry, whose single-file CLI is @yarnpkg/cli-dist).
const (
	yarnClassicVersion = "1.22.22"
	yarnBerryVersion   = "4.18.1"
)

// npmInstalled installs spec once into a cache directory shared by test
// runs (scripts off) and returns the path of file inside its package.
func npmInstalled(t *testing.T, spec, pkgDir, file string) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	dir := filepath.Join(os.TempDir(), "regedge-"+strings.NewReplacer("@", "-", "/", "-").Replace(spec))
	path := filepath.Join(dir, "node_modules", filepath.FromSlash(pkgDir), filepath.FromSlash(file))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	os.MkdirAll(dir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=warn", "--prefix", dir, spec)
	if out, err := cmd.CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("installing %s from the npm registry failed: %v\n%s", spec, err, out))
	}
	return path
}

// yarnTarget is one yarn: how to configure a project for the edge, and
// how to install and publish there.
type yarnTarget struct {
	name      string
	configure func(proj, edgeURL, hostPort, tok string)
	install   []string
	publish   []string
	lock      string
	script    func(t *testing.T) string
}

func yarns() []yarnTarget {
	return []yarnTarget{
		{
			name: "yarn1",
			configure: func(proj, edgeURL, hostPort, tok string) {
				// Yarn 1 reads the registry and the token from .npmrc, as npm does.
				os.WriteFile(filepath.Join(proj, ".npmrc"), []byte(fmt.Sprintf("registry=%s/\n//%s/:_authToken=%s\n", edgeURL, hostPort, tok)), 0o600)
				os.WriteFile(filepath.Join(proj, ".yarnrc"), []byte(fmt.Sprintf("registry %q\n", edgeURL+"/")), 0o600)
			},
			install: []string{"install", "--non-interactive", "--no-progress", "--network-timeout", "60000"},
			publish: []string{"publish", "--non-interactive", "--no-git-tag-version", "--new-version", "1.0.0"},
			lock:    "yarn.lock",
			script: func(t *testing.T) string {
				return npmInstalled(t, "yarn@"+yarnClassicVersion, "yarn", "bin/yarn.js")
			},
		},
		{
			name: "yarn4",
			configure: func(proj, edgeURL, hostPort, tok string) {
				host, _, _ := strings.Cut(hostPort, ":")
				os.WriteFile(filepath.Join(proj, ".yarnrc.yml"), []byte(fmt.Sprintf(
					"npmRegistryServer: %q\nnpmAuthToken: %q\nnpmMinimalAgeGate: 0\nunsafeHttpWhitelist:\n  - %q\nnodeLinker: node-modules\nenableGlobalCache: false\nenableTelemetry: false\nenableImmutableInstalls: false\n",
					edgeURL, tok, host)), 0o600)
			},
			install: []string{"install", "--mode=skip-build"},
			publish: []string{"npm", "publish"},
			lock:    "yarn.lock",
			script: func(t *testing.T) string {
				return npmInstalled(t, "@yarnpkg/cli-dist@"+yarnBerryVersion, "@yarnpkg/cli-dist", "bin/yarn.js")
			},
		},
	}
}

// TestYarnInstallsWithAnonymousReadAndPublishesWithAWriteToken: yarn 1 and
// yarn 4, with their defaults (which send the token for some requests
// only), install a scoped package and its unscoped dependency through an
// edge with tokens.anonymousRead; with a registry:write token they
// publish through it, and the upstream sees the edge's credential on every
// request, never the client's token. With a read token the publish is
// refused and never reaches the upstream.
func TestYarnInstallsWithAnonymousReadAndPublishesWithAWriteToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real clients")
	}
	for _, y := range yarns() {
		t.Run(y.name, func(t *testing.T) {
			script := y.script(t)
			e := newEdge(t, func(cfg *Config) {
				cfg.AnonymousRead = true // without it both fail: YN0041 on the unscoped dependency
				cfg.Upstreams = append(cfg.Upstreams, Upstream{Hash: 0, URL: cfg.Upstreams[0].URL, AuthToken: "upstream-secret"})
			})
			write := e.tokenFor(t, "release", "registry:write", "0xa1b2c3d4", "0x00000000")
			read := e.tokenFor(t, "ci", "", "0xa1b2c3d4", "0x00000000")
			hostPort := strings.TrimPrefix(e.URL, "http://")
			dir := t.TempDir()
			home := filepath.Join(dir, "home")
			os.MkdirAll(home, 0o700)
			run := func(proj string, args ...string) (string, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
				cmd.Dir = proj
				cmd.Env = append(os.Environ(), "HOME="+home, "YARN_CACHE_FOLDER="+filepath.Join(home, "cache"),
					"npm_config_userconfig="+filepath.Join(home, ".npmrc"), "YARN_ENABLE_TELEMETRY=0", "CI=1",
					"YARN_GLOBAL_FOLDER="+filepath.Join(home, "global"), "COREPACK_ENABLE_STRICT=0")
				out, err := cmd.CombinedOutput()
				return string(out), err
			}

			// Install, with the read token configured: yarn sends it or not
			// as it likes; anonymous reads are let through.
			proj := filepath.Join(dir, "proj")
			os.MkdirAll(proj, 0o700)
			os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"proj","version":"1.0.0","private":true,"dependencies":{"@mycompany/hello":"^1.2.3"}}`), 0o644)
			y.configure(proj, e.URL, hostPort, read)
			if out, err := run(proj, y.install...); err != nil {
				t.Fatalf("%s install: %v\n%s", y.name, err, out)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			node := exec.CommandContext(ctx, "node", "-e", "process.stdout.write(require('@mycompany/hello'))")
			node.Dir = proj
			if got, err := node.Output(); err != nil || string(got) != "dep hello" {
				t.Fatalf("the installed package says %q (%v)", got, err)
			}
			if lock, err := os.ReadFile(filepath.Join(proj, y.lock)); err != nil || strings.Contains(string(lock), strings.TrimPrefix(e.reg.URL, "http://")) {
				t.Fatalf("%s (%v) names the upstream:\n%s", y.lock, err, lock)
			}

			// Publish with a read token: refused, nothing reaches the upstream.
			pub := filepath.Join(dir, "pub")
			os.MkdirAll(pub, 0o700)
			os.WriteFile(filepath.Join(pub, "package.json"), []byte(`{"name":"`+y.name+`-published","version":"1.0.0","main":"index.js"}`), 0o644)
			os.WriteFile(filepath.Join(pub, "index.js"), []byte("module.exports = 'published with "+y.name+"'\n"), 0o644)
			y.configure(pub, e.URL, hostPort, read)
			if out, err := run(pub, y.install...); err != nil { // yarn 4 publishes workspaces it has installed
				t.Fatalf("%s install of the package to publish: %v\n%s", y.name, err, out)
			}
			tarball := "/" + y.name + "-published/-/" + y.name + "-published-1.0.0.tgz"
			if out, err := run(pub, y.publish...); err == nil || !strings.Contains(out, "registry:write") && !strings.Contains(out, "403") {
				t.Fatalf("%s publish with a read token: %v, want a 403\n%s", y.name, err, out)
			}
			if e.reg.TarballAt(tarball) != nil {
				t.Fatal("the publish with a read token reached the upstream")
			}

			// Publish with a registry:write token.
			y.configure(pub, e.URL, hostPort, write)
			if out, err := run(pub, y.publish...); err != nil {
				t.Fatalf("%s publish with a registry:write token: %v\n%s", y.name, err, out)
			}
			if e.reg.TarballAt(tarball) == nil {
				t.Fatal("the upstream did not get the published tarball")
			}
			paths, seen := e.reg.Requests()
			for i, h := range seen {
				if h.Get("Authorization") != "Bearer upstream-secret" {
					t.Fatalf("upstream request %d (%s) carried Authorization %q", i, paths[i], h.Get("Authorization"))
				}
			}
		})
	}
}

// TestNpmPublishWithAReadTokenRefused: the real npm client publishing with
// a token that lacks registry:write is refused 403 (npm says so) and the
// upstream never sees the publish; with registry:write it goes through.
func TestNpmPublishWithAReadTokenRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real clients")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	e := newEdge(t, func(cfg *Config) {
		cfg.Upstreams = append(cfg.Upstreams, Upstream{Hash: 0, URL: cfg.Upstreams[0].URL, AuthToken: "upstream-secret"})
	})
	hostPort := strings.TrimPrefix(e.URL, "http://")
	pub, home := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(pub, "package.json"), []byte(`{"name":"npm-published","version":"1.0.0","main":"index.js"}`), 0o644)
	os.WriteFile(filepath.Join(pub, "index.js"), []byte("module.exports = 1\n"), 0o644)
	publish := func(tok string) (string, error) {
		os.WriteFile(filepath.Join(pub, ".npmrc"), []byte(fmt.Sprintf("registry=%s/\n//%s/:_authToken=%s\n", e.URL, hostPort, tok)), 0o600)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "publish", "--no-update-notifier", "--loglevel=warn", "--provenance=false")
		cmd.Dir = pub
		cmd.Env = append(os.Environ(), "HOME="+home, "npm_config_cache="+filepath.Join(home, "cache"), "npm_config_userconfig="+filepath.Join(home, ".npmrc"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := publish(e.tokenFor(t, "ci", "", "0xa1b2c3d4", "0x00000000"))
	if err == nil || !strings.Contains(out, "403") {
		t.Fatalf("npm publish with a read token: %v\n%s", err, out)
	}
	// npm reads the packument after a refused publish (to word its
	// error): reads may reach the upstream, the publish may not.
	paths, seen := e.reg.Requests()
	for i, p := range paths {
		if p == "/npm-published" && (seen[i].Get("Content-Length") != "" || seen[i].Get("Content-Type") != "") {
			t.Fatalf("the refused publish reached the upstream: %s %v", p, seen[i])
		}
	}
	if e.reg.TarballAt("/npm-published/-/npm-published-1.0.0.tgz") != nil {
		t.Fatal("the refused publish reached the upstream")
	}
	if out, err := publish(e.tokenFor(t, "release", "registry:write", "0xa1b2c3d4", "0x00000000")); err != nil {
		t.Fatalf("npm publish with a registry:write token: %v\n%s", err, out)
	}
	if e.reg.TarballAt("/npm-published/-/npm-published-1.0.0.tgz") == nil {
		t.Fatal("the upstream did not get the publish")
	}
}
