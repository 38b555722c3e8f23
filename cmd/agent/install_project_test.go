package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/testutil"
)

// npmProjectRegistry is a registry with the shapes a real project meets:
// hoisting and nesting, a scoped package, an npm: alias, the cycle
// with a version conflict, a package that needs another version of itself,
// a latest dist-tag below the highest version, a deprecated latest, an
// executable file, a capitalised old-style name, and optional dependencies
// that fail in each way (not published, another os, a tarball that is
// gone, a missing dependency of their own).
func npmProjectRegistry(t *testing.T) *npmfixture.Registry {
	reg := npmfixture.New(t)
	add := func(name, version string, deps map[string]string, mod ...func(*npmfixture.Package)) {
		p := fixturePackage(name, version, deps)
		for _, m := range mod {
			m(&p)
		}
		reg.Add(p)
	}
	add("app", "1.0.0", map[string]string{"lib": "^1.0.0", "@s/util": "~0.1.0", "log": "2"})
	add("lib", "1.0.0", nil)
	add("lib", "1.3.0", nil)
	add("lib", "2.1.0", nil)
	add("@s/util", "0.1.4", map[string]string{"lib": "^1.1.0"})
	add("@s/util", "0.2.0", nil)
	add("log", "2.0.0", nil)
	add("log", "3.0.0", nil)
	add("tool", "2.0.0", map[string]string{"lib": "^2.0.0", "strf": "npm:str-format@^1"})
	add("str-format", "1.2.0", nil)
	add("str-format", "2.0.0", nil)
	add("cyc-a", "1.0.0", map[string]string{"cyc-b": "1"})
	add("cyc-b", "1.0.0", map[string]string{"cyc-a": "2"})
	add("cyc-a", "2.0.0", map[string]string{"cyc-b": "2"})
	add("cyc-b", "2.0.0", map[string]string{"cyc-a": "2"})
	add("self", "1.0.0", map[string]string{"self": "2"})
	add("self", "2.0.0", map[string]string{"self": "1"})
	add("tagged", "1.0.0", nil)
	add("tagged", "1.5.0", nil)
	reg.SetDistTag("tagged", "latest", "1.0.0")
	add("old", "1.0.0", nil)
	add("old", "1.1.0", nil, func(p *npmfixture.Package) { p.Extra = map[string]any{"deprecated": "use new"} })
	add("exec", "1.0.0", nil, func(p *npmfixture.Package) {
		p.Tarball = npmfixture.RawTarball([]npmfixture.Entry{
			{Name: "package/package.json", Type: tar.TypeReg, Body: `{"name":"exec","version":"1.0.0"}`},
			{Name: "package/run.sh", Type: tar.TypeReg, Body: "#!/bin/sh\necho hi\n", Mode: 0o755},
			{Name: "package/docs/readme.txt", Type: tar.TypeReg, Body: "read me\n"},
		})
	})
	add("CamelCase", "1.0.0", nil)
	add("opt-ok", "1.0.0", nil, func(p *npmfixture.Package) {
		p.Optional = map[string]string{"opt-gone": "1"}
		p.Files["package.json"] = `{"name":"opt-ok","version":"1.0.0","optionalDependencies":{"opt-gone":"1"}}`
	})
	add("opt-gone", "1.0.0", nil, func(p *npmfixture.Package) { p.NoTarball = true })
	add("opt-win", "1.0.0", nil, func(p *npmfixture.Package) { p.Extra = map[string]any{"os": []string{"win32"}} })
	add("opt-deep", "1.0.0", map[string]string{"not-there": "1"})
	add("devonly", "1.0.0", nil)
	add("shout", "1.0.0", nil)
	add("shout", "1.4.0", nil)
	add("shout", "2.0.0-rc.1", nil)
	reg.SetDistTag("shout", "latest", "1.4.0")
	reg.SetDistTag("shout", "next", "2.0.0-rc.1")
	return reg
}

const projectPackageJSON = `{
  "name": "proj",
  "version": "1.0.0",
  "private": true,
  "dependencies": {
    "app": "^1.0.0",
    "tool": "^2.0.0",
    "cyc-a": "1",
    "self": "1",
    "tagged": "^1",
    "old": "^1",
    "exec": "1",
    "CamelCase": "^1.0.0"
  },
  "optionalDependencies": {
    "opt-ok": "^1",
    "opt-missing": "^1",
    "opt-win": "^1",
    "opt-deep": "^1"
  },
  "devDependencies": {
    "devonly": "^1"
  }
}
`

// runNpm runs the real npm in proj against registry, with its own HOME,
// cache and user config so that nothing of the machine's npm setup (or
// the internet) is involved.
func runNpm(t *testing.T, proj, registry string, args ...string) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args = append(args, "--prefix", proj, "--registry", registry+"/", "--no-audit", "--no-fund", "--no-update-notifier", "--ignore-scripts", "--loglevel=warn")
	cmd := exec.CommandContext(ctx, npm, args...)
	cmd.Dir = proj
	cmd.Env = append(os.Environ(), "HOME="+home, "npm_config_cache="+filepath.Join(home, "cache"), "npm_config_userconfig="+filepath.Join(home, ".npmrc"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// listing describes every entry under dir/node_modules (not following
// links): directories, files with their mode and a hash of their bytes,
// links with their target. npm's own bookkeeping file is left out.
func listing(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	root := filepath.Join(dir, "node_modules")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == ".package-lock.json" {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = "link " + target
		case fi.IsDir():
			m[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			m[rel] = fmt.Sprintf("file %v %s", fi.Mode().Perm(), hex.EncodeToString(sum[:8]))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diffListings(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, fmt.Sprintf("%s: regedge %q, npm %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: regedge none, npm %q", k, v))
		}
	}
	sort.Strings(d)
	return d
}

// `regedge install` with no package installs DIR/package.json as `npm
// install --omit=dev` does on the same registry: the same node_modules
// tree (directories, links, files byte for byte, modes), the optional
// dependencies that cannot be installed left out by both.
func TestInstallNoArgumentsMatchesNpm(t *testing.T) {
	npmHome(t)
	reg := npmProjectRegistry(t)
	ours, theirs := t.TempDir(), t.TempDir()
	for _, d := range []string{ours, theirs} {
		os.WriteFile(filepath.Join(d, "package.json"), []byte(projectPackageJSON), 0o644)
	}
	out, errs, code := run(t, "", "install", "--dir", ours, "--registry", reg.URL)
	if code != 0 {
		t.Fatalf("install: %d\n%s\n%s", code, out, errs)
	}
	for _, skipped := range []string{"opt-missing", "opt-win", "opt-deep", "opt-gone"} {
		if !strings.Contains(out, "skipped optional dependency "+skipped) {
			t.Errorf("the output does not say %s was skipped:\n%s", skipped, out)
		}
	}
	runNpm(t, theirs, reg.URL, "install", "--omit=dev")
	mine, npms := listing(t, ours), listing(t, theirs)
	if d := diffListings(mine, npms); len(d) > 0 {
		t.Fatalf("the trees differ:\n%s", strings.Join(d, "\n"))
	}
	// the shapes the registry was built to produce are all there
	for rel, want := range map[string]string{
		"cyc-b/node_modules/cyc-b":                 "dir",
		"self/node_modules/self/node_modules/self": "link ../../..",
		"tool/node_modules/lib":                    "dir",
		"strf":                                     "dir",
		"@s/util":                                  "dir",
		"CamelCase":                                "dir",
		"exec/run.sh":                              "file -rwxr-xr-x",
		"opt-ok":                                   "dir",
	} {
		if !strings.HasPrefix(mine[rel], want) {
			t.Errorf("node_modules/%s = %q, want %s", rel, mine[rel], want)
		}
	}
	for _, absent := range []string{"devonly", "opt-win", "opt-deep", "opt-ok/node_modules/opt-gone"} {
		if _, ok := mine[absent]; ok {
			t.Errorf("node_modules/%s was installed", absent)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(ours, "package.json")); string(b) != projectPackageJSON {
		t.Errorf("a no-argument install changed package.json:\n%s", b)
	}
	if m, _ := filepath.Glob(filepath.Join(ours, ".regedge-install-*")); len(m) != 0 {
		t.Errorf("staging left behind: %v", m)
	}
}

func TestInstallNoArgumentsWithoutDependencies(t *testing.T) {
	npmHome(t)
	dir := t.TempDir()
	_, errs, code := run(t, "", "install", "--dir", dir, "--registry", "http://127.0.0.1:1")
	if code != 1 || !strings.Contains(errs, "no package.json in "+dir) || !strings.Contains(errs, "node_modules unchanged") {
		t.Fatalf("no package.json: %d %s", code, errs)
	}
	os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"p","devDependencies":{"x":"1"}}`), 0o644)
	if out, errs, code := run(t, "", "install", "--dir", dir, "--registry", "http://127.0.0.1:1"); code != 0 || !strings.Contains(out, "nothing to install") {
		t.Fatalf("no dependencies: %d %s %s", code, out, errs)
	}
	os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"dependencies":{"x":"git+https://example.com/x.git"}}`), 0o644)
	if _, errs, code := run(t, "", "install", "--dir", dir, "--registry", "http://127.0.0.1:1"); code != 1 || !strings.Contains(errs, "not a registry version") {
		t.Fatalf("git dependency: %d %s", code, errs)
	}
}

// `regedge install NAME` writes package.json byte for byte as `npm install
// NAME` does, whatever the file looked like.
func TestInstallSavesPackageJSONLikeNpm(t *testing.T) {
	npmHome(t)
	reg := npmProjectRegistry(t)
	for _, tc := range []struct{ name, pkgJSON, spec string }{
		{"no package.json", "", "shout"},
		{"two spaces, other keys", "{\n  \"name\": \"p\",\n  \"version\": \"1.0.0\",\n  \"dependencies\": {\n    \"log\": \"2\"\n  },\n  \"scripts\": {\n    \"test\": \"node t.js\"\n  }\n}\n", "shout"},
		{"four spaces, a range", "{\n    \"name\": \"p\",\n    \"version\": \"1.0.0\"\n}\n", "shout@~1.0"},
		{"tabs and CRLF, an exact version", "{\r\n\t\"name\": \"p\",\r\n\t\"version\": \"1.0.0\"\r\n}\r\n", "shout@1.0.0"},
		{"one line, a dist-tag", `{"name":"p","version":"1.0.0"}`, "shout@next"},
		{"already a devDependency", "{\n  \"name\": \"p\",\n  \"devDependencies\": {\n    \"shout\": \"^1.0.0\"\n  }\n}\n", "shout@^1"},
		{"an alias", "{\n  \"name\": \"p\"\n}\n", "sh@npm:shout@^1"},
		{"a range npm keeps", "{\n  \"name\": \"p\"\n}\n", "lib@>=1.0.0 <1.2.0"},
		{"a scoped package", "{\n  \"name\": \"p\",\n  \"dependencies\": {\n    \"zzz-unrelated\": \"file:../nowhere\"\n  }\n}\n", "@s/util@~0.1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ours, theirs := t.TempDir(), t.TempDir()
			if tc.pkgJSON != "" {
				for _, d := range []string{ours, theirs} {
					os.WriteFile(filepath.Join(d, "package.json"), []byte(tc.pkgJSON), 0o644)
				}
			}
			if strings.Contains(tc.pkgJSON, "file:") {
				// npm would install the file: dependency too; give it one
				os.MkdirAll(filepath.Join(filepath.Dir(theirs), "nowhere"), 0o755)
				os.WriteFile(filepath.Join(filepath.Dir(theirs), "nowhere", "package.json"), []byte(`{"name":"zzz-unrelated","version":"1.0.0"}`), 0o644)
			}
			out, errs, code := run(t, "", "install", tc.spec, "--dir", ours, "--registry", reg.URL)
			if code != 0 {
				t.Fatalf("install: %d\n%s\n%s", code, out, errs)
			}
			runNpm(t, theirs, reg.URL, "install", tc.spec)
			mine, _ := os.ReadFile(filepath.Join(ours, "package.json"))
			npms, _ := os.ReadFile(filepath.Join(theirs, "package.json"))
			if string(mine) != string(npms) {
				t.Fatalf("package.json differs:\nregedge %q\nnpm     %q", mine, npms)
			}
		})
	}
}

func TestInstallNoSave(t *testing.T) {
	npmHome(t)
	reg := npmProjectRegistry(t)
	dir := t.TempDir()
	const pkg = "{\n  \"name\": \"p\"\n}\n"
	os.WriteFile(filepath.Join(dir, "package.json"), []byte(pkg), 0o644)
	if out, errs, code := run(t, "", "install", "shout", "--no-save", "--dir", dir, "--registry", reg.URL); code != 0 || strings.Contains(out, "saved") {
		t.Fatalf("%d %s %s", code, out, errs)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "package.json")); string(b) != pkg {
		t.Fatalf("--no-save changed package.json: %s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules/shout/package.json")); err != nil {
		t.Fatal(err)
	}
}

// The first attack through the command: a dependency named to
// climb out of the project is refused with its name and who asked, and
// nothing is written anywhere.
func TestInstallRefusesAClimbingDependencyName(t *testing.T) {
	npmHome(t)
	reg := npmfixture.New(t)
	const climb = "../../../outside/pwned"
	reg.Add(fixturePackage("evil", "1.0.0", map[string]string{climb: "1.0.0"}))
	reg.Add(fixturePackage(climb, "1.0.0", nil))
	base := t.TempDir()
	dir := filepath.Join(base, "project")
	os.Mkdir(dir, 0o755)
	_, errs, code := run(t, "", "install", "evil", "--dir", dir, "--registry", reg.URL)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{`"` + climb + `"`, "evil@1.0.0", "not a valid npm package name", "(node_modules unchanged)"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr does not say %q: %s", want, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "outside")); !os.IsNotExist(err) {
		t.Fatalf("install wrote outside the project: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("install left %v in the project", entries)
	}
}

// The cycle through the command: it ends, with npm's layout.
func TestInstallCycleWithVersionConflictEnds(t *testing.T) {
	npmHome(t)
	reg := npmProjectRegistry(t)
	dir := t.TempDir()
	out, errs, code := run(t, "", "install", "cyc-a@1", "--dir", dir, "--registry", reg.URL)
	if code != 0 || !strings.Contains(out, "installed 4 packages") {
		t.Fatalf("%d\n%s\n%s", code, out, errs)
	}
}

// The third attack through the command: the token given to
// install reaches the registry, not a tarball host elsewhere.
func TestInstallSendsTheTokenOnlyToTheRegistry(t *testing.T) {
	npmHome(t)
	elsewhere := npmfixture.New(t)
	elsewhere.Add(fixturePackage("greet", "1.0.0", nil))
	reg := npmfixture.New(t)
	reg.RequireToken = "t0k"
	p := fixturePackage("greet", "1.0.0", nil)
	p.TarballBase = elsewhere.URL
	reg.Add(p)
	dir := t.TempDir()
	if out, errs, code := run(t, "", "install", "greet", "--dir", dir, "--registry", reg.URL, "--token", "t0k"); code != 0 {
		t.Fatalf("%d\n%s\n%s", code, out, errs)
	}
	paths, headers := elsewhere.Requests()
	if len(paths) != 1 {
		t.Fatalf("the tarball host saw %v", paths)
	}
	for k, v := range headers[0] {
		if k == "Authorization" || strings.HasPrefix(k, "X-Bun-") {
			t.Fatalf("the tarball host got %s: %v", k, v)
		}
	}
}

// A project set up for npm (.npmrc with registry= and a token from the
// environment) installs without flags; the user's file fills in what the
// project's does not say; flags and REGEDGE_TOKEN win.
func TestInstallAndPublishReadNpmrc(t *testing.T) {
	home := npmHome(t)
	reg := npmfixture.New(t)
	reg.RequireToken = "from-npmrc"
	reg.Add(fixturePackage("greet", "1.0.0", nil))
	u, _ := url.Parse(reg.URL)
	proj := t.TempDir()
	t.Setenv("TEST_NPM_TOKEN", "from-npmrc")
	os.WriteFile(filepath.Join(proj, ".npmrc"), []byte("registry="+reg.URL+"/\n"), 0o600)
	os.WriteFile(filepath.Join(home, ".npmrc"), []byte("//"+u.Host+"/:_authToken=${TEST_NPM_TOKEN}\n"), 0o600)
	out, errs, code := run(t, "", "install", "greet", "--dir", proj, "--verbose")
	if code != 0 {
		t.Fatalf("install with the .npmrc: %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"registry " + reg.URL + "/ (from " + filepath.Join(proj, ".npmrc"), "token for //" + u.Host + "/ from " + filepath.Join(home, ".npmrc")} {
		if !strings.Contains(errs, want) {
			t.Errorf("--verbose does not say %q:\n%s", want, errs)
		}
	}
	// REGEDGE_TOKEN wins over the file: the registry refuses it
	t.Setenv("REGEDGE_TOKEN", "wrong")
	if _, errs, code := run(t, "", "install", "greet", "--dir", proj); code != 1 || !strings.Contains(errs, "401") {
		t.Fatalf("REGEDGE_TOKEN did not win: %d %s", code, errs)
	}
	// --token wins over REGEDGE_TOKEN
	if _, errs, code := run(t, "", "install", "greet", "--dir", proj, "--token", "from-npmrc"); code != 0 {
		t.Fatalf("--token did not win: %d %s", code, errs)
	}
	t.Setenv("REGEDGE_TOKEN", "")

	// publish reads the package's .npmrc the same way; a scoped package
	// goes to its scope's registry with that registry's token
	scoped := npmfixture.New(t)
	scoped.RequireToken = "scoped-token"
	su, _ := url.Parse(scoped.URL)
	pkg := t.TempDir()
	os.WriteFile(filepath.Join(pkg, "package.json"), []byte(`{"name":"@corp/lib","version":"1.0.0"}`), 0o644)
	os.WriteFile(filepath.Join(pkg, ".npmrc"), []byte("registry="+reg.URL+"/\n@corp:registry="+scoped.URL+"/\n//"+su.Host+"/:_authToken=scoped-token\n"), 0o600)
	if out, errs, code := run(t, "", "publish", "--dir", pkg); code != 0 || !strings.Contains(out, "published @corp/lib@1.0.0 to "+scoped.URL) {
		t.Fatalf("scoped publish: %d\n%s\n%s", code, out, errs)
	}
	if path, h := scoped.Last(); path != "/@corp%2flib" || h.Get("Authorization") != "Bearer scoped-token" {
		t.Fatalf("the scoped registry got %s with %q", path, h.Get("Authorization"))
	}
	os.WriteFile(filepath.Join(pkg, "package.json"), []byte(`{"name":"plain-lib","version":"1.0.0"}`), 0o644)
	if out, errs, code := run(t, "", "publish", "--dir", pkg); code != 0 || !strings.Contains(out, "published plain-lib@1.0.0 to "+reg.URL) {
		t.Fatalf("publish with the user's token: %d\n%s\n%s", code, out, errs)
	}
	// a registry= the file cannot make a URL of is an error naming the file
	os.WriteFile(filepath.Join(proj, ".npmrc"), []byte("registry=${UNSET_REGISTRY_VAR}\n"), 0o600)
	if _, errs, code := run(t, "", "install", "greet", "--dir", proj); code != 1 || !strings.Contains(errs, filepath.Join(proj, ".npmrc")) {
		t.Fatalf("bad registry in .npmrc: %d %s", code, errs)
	}
}
