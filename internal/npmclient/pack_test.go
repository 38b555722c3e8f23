package npmclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/testutil"
)

// packCases are package directories; each is packed by Pack and by the
// real `npm pack` and the file lists compared.
var packCases = map[string]map[string]string{
	"everything": {
		"package.json": `{"name":"every","version":"1.0.0"}`,
		"index.js":     "x", "lib/a.js": "a", "README.md": "r", ".npmrc": "secret", "package-lock.json": "{}",
		"node_modules/dep/index.js": "d", ".git/HEAD": "ref", "x.orig": "o", ".DS_Store": "", "sub/.gitignore": "",
	},
	"npmignore": {
		"package.json": `{"name":"ign","version":"1.0.0"}`,
		".npmignore":   "# tests stay home\ntest/\n*.log\n/docs\n!keep.log\n",
		".gitignore":   "lib\n",
		"lib/a.js":     "a", "test/t.js": "t", "docs/d.md": "d", "sub/docs/d.md": "d2", "x.log": "l", "keep.log": "k", "LICENSE": "mit",
	},
	"gitignore only": {
		"package.json": `{"name":"git","version":"1.0.0"}`,
		".gitignore":   "dist/\n*.tmp\n",
		"dist/out.js":  "o", "src/in.js": "i", "a.tmp": "t", "b.js": "b",
	},
	"files list": {
		"package.json": `{"name":"@scope/files","version":"2.1.0-beta.1","main":"main.js","bin":{"x":"bin/x.js"},"files":["lib","*.d.ts","/dist/"]}`,
		"main.js":      "m", "bin/x.js": "#!/usr/bin/env node\n", "lib/a.js": "a", "lib/deep/b.js": "b",
		"types.d.ts": "t", "sub/other.d.ts": "o", "dist/x.js": "x", "other.js": "no", "README": "r", "licence.txt": "l",
		".npmignore": "lib\n",
	},
}

func writeTree(t *testing.T, files map[string]string) string {
	dir := t.TempDir()
	for p, body := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		mode := os.FileMode(0o644)
		if strings.HasPrefix(body, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPackMatchesNpmPack(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	for name, files := range packCases {
		t.Run(name, func(t *testing.T) {
			dir := writeTree(t, files)
			p, err := Pack(dir)
			if err != nil {
				t.Fatal(err)
			}
			home := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, npm, "pack", "--dry-run", "--json", "--ignore-scripts", "--no-update-notifier")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "HOME="+home, "npm_config_cache="+filepath.Join(home, "cache"), "npm_config_userconfig="+filepath.Join(home, ".npmrc"))
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("npm pack: %v\n%s", err, out)
			}
			var res []struct {
				Files []struct{ Path string } `json:"files"`
			}
			if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 {
				t.Fatalf("npm pack --json: %v\n%s", err, out)
			}
			var theirs []string
			for _, f := range res[0].Files {
				theirs = append(theirs, f.Path)
			}
			sort.Strings(theirs)
			if !reflect.DeepEqual(p.Files, theirs) {
				t.Fatalf("files differ\nregedge %v\nnpm     %v", p.Files, theirs)
			}
			// what we pack unpacks to the same bytes
			into := filepath.Join(t.TempDir(), "x")
			if err := Extract(bytes.NewReader(p.Tarball), into); err != nil {
				t.Fatal(err)
			}
			for _, f := range p.Files {
				b, err := os.ReadFile(filepath.Join(into, filepath.FromSlash(f)))
				if err != nil || string(b) != files[f] {
					t.Fatalf("%s: %q %v", f, b, err)
				}
			}
		})
	}
}

func TestPackIsReproducibleAndRefusesBadManifests(t *testing.T) {
	dir := writeTree(t, packCases["everything"])
	a, err := Pack(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(dir, "index.js"), time.Now(), time.Now().Add(time.Hour))
	b, _ := Pack(dir)
	if !bytes.Equal(a.Tarball, b.Tarball) || a.Integrity != b.Integrity {
		t.Fatal("packing the same files twice gave different tarballs")
	}
	for manifest, want := range map[string]string{
		`{"name":"Bad Name","version":"1.0.0"}`: "not a valid npm package name",
		`{"name":"ok","version":"one"}`:         "not semver",
		`{"name":"ok"`:                          "package.json",
	} {
		d := writeTree(t, map[string]string{"package.json": manifest})
		if _, err := Pack(d); !errors.Is(err, ErrBadPackage) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v", manifest, err)
		}
	}
	if _, err := Pack(t.TempDir()); !errors.Is(err, ErrBadPackage) {
		t.Fatalf("no package.json: %v", err)
	}
}

func TestPublishThenInstall(t *testing.T) {
	reg := npmfixture.New(t)
	dir := writeTree(t, packCases["files list"])
	p, err := Pack(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, reg.URL)
	if err := c.Publish(context.Background(), p, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(context.Background(), p, ""); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("publishing the same version twice: %v", err)
	}
	proj := t.TempDir()
	if _, err := c.Install(context.Background(), proj, []Spec{ParseSpec("@scope/files@2.1.0-beta.1")}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range p.Files {
		b, err := os.ReadFile(filepath.Join(proj, "node_modules/@scope/files", filepath.FromSlash(f)))
		if err != nil || string(b) != packCases["files list"][f] {
			t.Fatalf("%s after publish and install: %q %v", f, b, err)
		}
	}
	// the executable bit travels: bin/x.js was 0755 in the source
	for f, want := range map[string]os.FileMode{"bin/x.js": 0o755, "main.js": 0o644} {
		fi, err := os.Stat(filepath.Join(proj, "node_modules/@scope/files", f))
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v %v, want %v", f, fi.Mode().Perm(), err, want)
		}
	}
}

func TestIgnoreRules(t *testing.T) {
	rs := compileRules([]string{"# comment", "*.log", "!keep.log", "/docs", "build/", "a/**/z.js", "[ab].txt", "?.md"})
	for p, want := range map[string]bool{
		"x.log": true, "sub/x.log": true, "keep.log": false, "sub/keep.log": false,
		"docs/a.md": true, "sub/docs/ab.md": false, "build/out.js": true, "src/build/out.js": true,
		"a/z.js": true, "a/b/c/z.js": true, "b/a/z.js": false, "a.txt": true, "c.txt": false,
		"x.md": true, "xy.md": false, "index.js": false,
	} {
		if got := rs.matches(p); got != want {
			t.Errorf("%s: matched %v, want %v", p, got, want)
		}
	}
}

func FuzzIgnoreRules(f *testing.F) {
	f.Add("*.log\n!keep.log\n/docs\n", "docs/x.log")
	f.Add("[\n**\n\\\n", "a/b")
	f.Fuzz(func(t *testing.T, file, path string) {
		rs := compileRules(strings.Split(file, "\n"))
		rs.matches(path) // must not panic on any rule or path
	})
}
