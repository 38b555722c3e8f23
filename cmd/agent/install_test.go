package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/testutil"
)

func fixturePackage(name, version string, deps map[string]string) npmfixture.Package {
	return npmfixture.Package{Name: name, Version: version, Deps: deps, Files: map[string]string{
		"package.json": `{"name":"` + name + `","version":"` + version + `","main":"index.js"}`,
		"index.js":     "module.exports = '" + name + "@" + version + "'\n",
		"lib/util.js":  strings.Repeat("// util\n", 200),
	}}
}

// snapshot reads every file under dir into a map (path -> contents).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		m[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestInstallThroughTheEdgeMatchesNpm(t *testing.T) {
	npmHome(t)
	reg := npmfixture.New(t)
	reg.Add(fixturePackage("greet", "1.0.0", map[string]string{"shout": "^1.0.0"}))
	reg.Add(fixturePackage("shout", "1.0.0", nil))
	reg.Add(fixturePackage("shout", "1.4.0", nil))
	reg.Add(fixturePackage("shout", "2.0.0", nil))
	t.Setenv("REGEDGE_CACHE_DIR", t.TempDir())
	t.Setenv("UPSTREAM_FALLBACK", reg.URL)
	a := runningAgent(t)
	_, port, _ := net.SplitHostPort(a.ProxyAddr().String())
	edge := "http://127.0.0.1:" + port

	ours := t.TempDir()
	out, errs, code := run(t, "", "install", "greet@^1", "--registry", edge, "--dir", ours, "--verbose", "--token", "not-checked-here")
	if code != 0 {
		t.Fatalf("install: %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(out, "installed 2 packages") || !strings.Contains(out, "shout@1.4.0") {
		t.Fatalf("install output: %s", out)
	}
	for _, h := range []string{"X-Bun-Config-Version: ", "X-Bun-Registry-Hash: 0x", "Authorization: Bearer <token>"} {
		if !strings.Contains(errs, h) {
			t.Fatalf("--verbose does not show %q:\n%s", h, errs)
		}
	}
	// requests reached the upstream through the edge, not around it
	if len(reg.Seen) == 0 {
		t.Fatal("the fixture registry saw no request")
	}

	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	theirs := npmInstall(t, npm, edge, "greet@^1")
	for _, pkg := range []string{"greet", "shout"} {
		mine := snapshot(t, filepath.Join(ours, "node_modules", pkg))
		npms := snapshot(t, filepath.Join(theirs, "node_modules", pkg))
		if len(mine) != 3 || len(mine) != len(npms) {
			t.Fatalf("%s: regedge wrote %d files, npm %d", pkg, len(mine), len(npms))
		}
		for p, b := range mine {
			if !bytes.Equal([]byte(b), []byte(npms[p])) {
				t.Fatalf("%s/%s differs from what npm installed", pkg, p)
			}
		}
	}
}

func TestInstallErrors(t *testing.T) {
	npmHome(t)
	if _, errs, code := run(t, "", "install", "x", "--registry", "ftp://nope"); code != 2 || !strings.Contains(errs, "want an http(s) URL") {
		t.Fatalf("bad registry: %d %s", code, errs)
	}
	if _, _, code := run(t, ""); code != 0 {
		t.Fatalf("no args: %d", code)
	}
	reg := npmfixture.New(t)
	dir := t.TempDir()
	_, errs, code := run(t, "", "install", "missing", "--registry", reg.URL, "--dir", dir)
	if code != 1 || !strings.Contains(errs, "missing: not found") || !strings.Contains(errs, "node_modules unchanged") {
		t.Fatalf("missing package: %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); !os.IsNotExist(err) {
		t.Fatal("a failed install created node_modules")
	}
}

func TestPublishThroughTheEdgeThenInstallWithRegedgeAndNpm(t *testing.T) {
	npmHome(t)
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	reg := npmfixture.New(t)
	t.Setenv("REGEDGE_CACHE_DIR", t.TempDir())
	t.Setenv("UPSTREAM_FALLBACK", reg.URL)
	a := runningAgent(t)
	_, port, _ := net.SplitHostPort(a.ProxyAddr().String())
	edge := "http://127.0.0.1:" + port

	src := t.TempDir()
	files := map[string]string{
		"package.json":   `{"name":"edge-published","version":"0.3.0","main":"lib/index.js","files":["lib"]}`,
		"lib/index.js":   "module.exports = require('./impl')\n",
		"lib/impl.js":    "module.exports = 'published through the edge'\n",
		"README.md":      "# edge-published\n",
		"test/secret.js": "not packed\n",
		".npmrc":         "//x/:_authToken=never-packed\n",
	}
	for p, body := range files {
		os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(src, p), []byte(body), 0o644)
	}
	out, errs, code := run(t, "", "publish", "--dir", src, "--registry", edge, "--token", "t0k", "--verbose")
	if code != 0 || !strings.Contains(out, "published edge-published@0.3.0") || !strings.Contains(out, "4 files") {
		t.Fatalf("publish: %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(errs, "> PUT "+edge+"/edge-published") {
		t.Fatalf("publish did not go through the edge: %s", errs)
	}
	// the upstream got the config headers; the client's token is the edge's
	// business and never travels upstream (docs/configuration.md: proxy.upstreams[].auth)
	last := reg.Seen[len(reg.Seen)-1]
	if last.Get("X-Bun-Config-Version") == "" || strings.Contains(last.Get("Authorization"), "t0k") {
		t.Fatalf("the upstream got the publish without config headers or with the client token: %v", last)
	}
	// publishing the same version again is refused by the upstream, and says so
	if _, errs, code := run(t, "", "publish", "--dir", src, "--registry", edge); code != 1 || !strings.Contains(errs, "409") {
		t.Fatalf("republish: %d %s", code, errs)
	}

	ours := t.TempDir()
	if out, errs, code := run(t, "", "install", "edge-published", "--registry", edge, "--dir", ours); code != 0 {
		t.Fatalf("install: %d\n%s\n%s", code, out, errs)
	}
	theirs := npmInstall(t, npm, edge, "edge-published")
	mine := snapshot(t, filepath.Join(ours, "node_modules", "edge-published"))
	npms := snapshot(t, filepath.Join(theirs, "node_modules", "edge-published"))
	want := map[string]string{}
	for _, p := range []string{"package.json", "lib/index.js", "lib/impl.js", "README.md"} {
		want[filepath.FromSlash(p)] = files[p]
	}
	for who, got := range map[string]map[string]string{"regedge install": mine, "npm install": npms} {
		if len(got) != len(want) {
			t.Fatalf("%s: files %v, want %v", who, keys(got), keys(want))
		}
		for p, b := range want {
			if got[p] != b {
				t.Fatalf("%s: %s = %q, want the published bytes %q", who, p, got[p], b)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := exec.CommandContext(ctx, "node", "-e", "process.stdout.write(require('edge-published'))")
	node.Dir = ours
	if b, err := node.Output(); err != nil || string(b) != "published through the edge" {
		t.Fatalf("node require from the regedge install: %q %v", b, err)
	}
}

// npmInstall runs the real npm client against registry in a new project
// (its own HOME and cache, so nothing of the machine's npm setup leaks in)
// and returns the project directory.
func npmInstall(t *testing.T, npm, registry, spec string) string {
	t.Helper()
	proj, home := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"proj","version":"1.0.0","private":true}`), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn",
		"--registry", registry+"/", spec)
	cmd.Dir = proj
	cmd.Env = append(os.Environ(), "HOME="+home, "npm_config_cache="+filepath.Join(home, "cache"), "npm_config_userconfig="+filepath.Join(home, ".npmrc"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install %s: %v\n%s", spec, err, b)
	}
	return proj
}

// npmHome gives the test its own empty user .npmrc and HOME, and no
// REGEDGE_TOKEN, so the machine's npm setup cannot leak into a test.
func npmHome(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("npm_config_userconfig", filepath.Join(home, ".npmrc"))
	t.Setenv("REGEDGE_TOKEN", "")
	return home
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestInstallShowsProgressOnATerminal runs `regedge install` in a
// pseudo-terminal: the download shows a progress bar there.
func TestInstallShowsProgressOnATerminal(t *testing.T) {
	npmHome(t)
	reg := npmfixture.New(t)
	reg.Add(fixturePackage("greet", "1.0.0", nil))
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "install", "greet", "--registry", reg.URL, "--dir", dir)
	cmd.Env = append(os.Environ(), "REGEDGE_TEST_RUN_CLI=1", "TERM=xterm-256color")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 100})
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	var screen bytes.Buffer
	read := make(chan struct{})
	go func() { io.Copy(&screen, ptmx); close(read) }() // ends with EIO when the child exits
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("install exited with %v:\n%q", err, screen.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("install did not finish within 30 s")
	}
	<-read
	if s := screen.String(); !strings.Contains(s, "greet@1.0.0") || !strings.Contains(s, "100%") || !strings.Contains(s, "installed 1 packages") {
		t.Fatalf("no progress bar on the terminal:\n%q", s)
	}
}

func TestPublishDryRunAndBadPackage(t *testing.T) {
	npmHome(t)
	reg := npmfixture.New(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "package.json"), []byte(`{"name":"dry","version":"1.0.0"}`), 0o644)
	os.WriteFile(filepath.Join(src, "index.js"), []byte("1\n"), 0o644)
	out, errs, code := run(t, "", "publish", "--dir", src, "--registry", reg.URL, "--dry-run")
	if code != 0 || !strings.Contains(out, "packed index.js") || !strings.Contains(out, "dry@1.0.0: 2 files") || strings.Contains(out, "published") {
		t.Fatalf("dry run: %d\n%s\n%s", code, out, errs)
	}
	if len(reg.Seen) != 0 {
		t.Fatal("a dry run reached the registry")
	}
	os.WriteFile(filepath.Join(src, "package.json"), []byte(`{"name":"Dry Run","version":"1.0.0"}`), 0o644)
	if _, errs, code := run(t, "", "publish", "--dir", src, "--registry", reg.URL); code != 1 || !strings.Contains(errs, "not a valid npm package name") {
		t.Fatalf("bad name: %d %s", code, errs)
	}
	if len(reg.Seen) != 0 {
		t.Fatal("a package that cannot be packed reached the registry")
	}
}
