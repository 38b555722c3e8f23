package npmclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
)

// What npm saves for what was asked and what was installed (npm's reify:
// the save prefix on the version unless the range asked for is narrower).
func TestSavedSpec(t *testing.T) {
	for _, tc := range []struct{ spec, version, want string }{
		{"x", "1.4.0", "^1.4.0"},
		{"x@latest", "1.4.0", "^1.4.0"},
		{"x@next", "2.0.0-rc.1", "^2.0.0-rc.1"},
		{"x@1.2.0", "1.2.0", "^1.2.0"},
		{"x@=1.2.0", "1.2.0", "^1.2.0"},
		{"x@*", "1.4.0", "^1.4.0"},
		{"x@^1", "1.4.0", "^1.4.0"},
		{"x@1", "1.4.0", "^1.4.0"},
		{"x@1.x", "1.4.0", "^1.4.0"},
		{"x@>=1", "1.4.0", "^1.4.0"},
		{"x@>=1.0.0 <3", "1.4.0", "^1.4.0"},
		{"x@<2", "1.4.0", "^1.4.0"},
		{"x@~1.2", "1.2.5", "~1.2"},
		{"x@1.2.x", "1.2.5", "1.2.x"},
		{"x@>=1.2.0 <1.5.0", "1.4.0", ">=1.2.0 <1.5.0"},
		{"x@^1.2 || ^2", "1.4.0", "^1.4.0"},
		{"x@^0.2.1", "0.2.3", "^0.2.3"},
		{"x@~0.2.1", "0.2.3", "^0.2.3"},
		{"x@0.0.x", "0.0.3", "^0.0.3"},
		{"x@>=1.4.0 <1.4.5 || >=1.5.0 <2", "1.4.0", ">=1.4.0 <1.4.5 || >=1.5.0 <2"},
		{"y@npm:x@^1", "1.4.0", "npm:x@^1.4.0"},
		{"y@npm:@s/x@~1.4", "1.4.0", "npm:@s/x@~1.4"},
		{"y@npm:x", "1.4.0", "npm:x@^1.4.0"},
	} {
		s := ParseSpec(tc.spec)
		w, _ := parseWant(s.Name, s.Range, "test")
		got, err := SavedSpec(s, w.pkg, tc.version)
		if err != nil || got != tc.want {
			t.Errorf("SavedSpec(%s, %s) = %q, %v; want %q", tc.spec, tc.version, got, err, tc.want)
		}
	}
}

// package.json is rewritten the way npm rewrites it: the file's own
// indentation and line ending, dependency groups sorted, the name in the
// group that already has it.
func TestSavePackageJSON(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		deps     []Saved
		want     string
	}{
		{"new file", "", []Saved{{"b", "^1.0.0"}, {"a", "^2.0.0"}},
			"{\n  \"dependencies\": {\n    \"a\": \"^2.0.0\",\n    \"b\": \"^1.0.0\"\n  }\n}\n"},
		{"four spaces, other keys kept in order", "{\n    \"name\": \"p\",\n    \"dependencies\": {\"z\": \"1\"},\n    \"scripts\": {\"t\": \"x\"}\n}\n", []Saved{{"a", "^1.0.0"}},
			"{\n    \"name\": \"p\",\n    \"dependencies\": {\n        \"a\": \"^1.0.0\",\n        \"z\": \"1\"\n    },\n    \"scripts\": {\n        \"t\": \"x\"\n    }\n}\n"},
		{"tabs and CRLF", "{\r\n\t\"name\": \"p\"\r\n}\r\n", []Saved{{"a", "^1.0.0"}},
			"{\r\n\t\"name\": \"p\",\r\n\t\"dependencies\": {\r\n\t\t\"a\": \"^1.0.0\"\r\n\t}\r\n}\r\n"},
		{"one line stays one line", `{"name":"p"}`, []Saved{{"a", "^1.0.0"}}, `{"name":"p","dependencies":{"a":"^1.0.0"}}`},
		{"dev dependency stays dev", "{\n  \"devDependencies\": {\"a\": \"^0.1.0\"},\n  \"dependencies\": {\"a\": \"^0.1.0\"}\n}", []Saved{{"a", "^1.0.0"}},
			"{\n  \"devDependencies\": {\n    \"a\": \"^1.0.0\"\n  }\n}\n"},
		{"optional stays optional", "{\"optionalDependencies\": {\"a\": \"1\"}, \"dependencies\": {\"a\": \"1\", \"b\": \"1\"}}", []Saved{{"a", "^1.0.0"}},
			"{\"optionalDependencies\":{\"a\":\"^1.0.0\"},\"dependencies\":{\"b\":\"1\"}}"},
		{"numbers and strings as JSON.stringify writes them", "{\n  \"n\": 1.50, \"e\": 1E3, \"big\": 1e21, \"s\": \"\\u00e9\\/\\u0001\"\n}", []Saved{{"a", "1"}},
			"{\n  \"n\": 1.5,\n  \"e\": 1000,\n  \"big\": 1e+21,\n  \"s\": \"é/\\u0001\",\n  \"dependencies\": {\n    \"a\": \"1\"\n  }\n}\n"},
		{"integer keys first", "{\"b\": 1, \"2\": 2, \"1\": 1}", []Saved{{"a", "1"}}, `{"1":1,"2":2,"b":1,"dependencies":{"a":"1"}}`},
		{"unchanged is not written", "{\n  \"dependencies\": {\n    \"a\": \"^1.0.0\"\n  }\n}\n", []Saved{{"a", "^1.0.0"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []byte
			if tc.in != "" {
				in = []byte(tc.in)
			}
			out, err := savedPackageJSON(in, tc.deps)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Fatalf("got\n%q\nwant\n%q", out, tc.want)
			}
		})
	}
	for _, bad := range []string{"[]", "{", `{"a":1} x`, `"s"`} {
		if _, err := savedPackageJSON([]byte(bad), []Saved{{"a", "1"}}); !errors.Is(err, ErrPackageJSON) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestProjectDeps(t *testing.T) {
	dir := t.TempDir()
	if _, err := ProjectDeps(dir); !errors.Is(err, ErrNoPackageJSON) {
		t.Fatalf("no file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"dependencies":{"b":"^1","o":"1"},"optionalDependencies":{"o":"^2"},"devDependencies":{"d":"1"}}`), 0o644)
	got, err := ProjectDeps(dir)
	want := []Spec{{Name: "b", Range: "^1"}, {Name: "o", Range: "^2", Optional: true}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v %v, want %v", got, err, want)
	}
	for _, bad := range []string{`[]`, `{"dependencies":[]}`, `{"dependencies":{"a":1}}`, `{`} {
		os.WriteFile(filepath.Join(dir, "package.json"), []byte(bad), 0o644)
		if _, err := ProjectDeps(dir); !errors.Is(err, ErrPackageJSON) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// SaveDependencies writes through the project's os.Root: a package.json
// that is a link out of the project is not followed.
func TestSaveDoesNotFollowALinkOut(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "p")
	os.Mkdir(dir, 0o755)
	outside := filepath.Join(base, "outside.json")
	os.WriteFile(outside, []byte(`{"name":"victim"}`), 0o644)
	os.Symlink(outside, filepath.Join(dir, "package.json"))
	if err := SaveDependencies(dir, []Saved{{"a", "^1.0.0"}}); err == nil {
		t.Fatal("saved through a link out of the project")
	}
	if b, _ := os.ReadFile(outside); string(b) != `{"name":"victim"}` {
		t.Fatalf("the file outside changed: %s", b)
	}
}

// A no-argument style install: dependencies and optionalDependencies,
// optional ones that fail left out with a warning, whatever the failure
// (not in the registry, another platform, a tarball that is gone, a
// dependency of theirs that is missing).
func TestInstallSkipsFailingOptionalDependencies(t *testing.T) {
	reg := npmfixture.New(t)
	add(reg, "req", "1.0.0", nil, func(p *npmfixture.Package) { p.Optional = map[string]string{"opt-gone": "1"} })
	add(reg, "opt-gone", "1.0.0", nil, func(p *npmfixture.Package) { p.NoTarball = true })
	add(reg, "opt-win", "1.0.0", nil, func(p *npmfixture.Package) { p.Extra = map[string]any{"os": []string{"win32"}} })
	add(reg, "opt-deep", "1.0.0", map[string]string{"not-there": "1"}, nil)
	add(reg, "opt-ok", "1.0.0", nil, func(p *npmfixture.Package) {
		p.Extra = map[string]any{"os": "!win32", "cpu": []string{"x64", "arm64", "ia32", "arm", "ppc64", "s390x", "riscv64", "loong64"}}
	})
	dir := t.TempDir()
	var log bytes.Buffer
	specs := []Spec{{Name: "req", Range: "^1"}, {Name: "opt-missing", Range: "^1", Optional: true}, {Name: "opt-win", Range: "^1", Optional: true},
		{Name: "opt-deep", Range: "^1", Optional: true}, {Name: "opt-ok", Range: "^1", Optional: true}}
	res, err := newClient(t, reg.URL).Install(context.Background(), dir, specs, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, &log)
	}
	if !reflect.DeepEqual(res.Packages, []string{"opt-ok@1.0.0", "req@1.0.0"}) {
		t.Fatalf("installed %v\n%s", res.Packages, &log)
	}
	for _, want := range []string{"opt-missing", "opt-win", "not-there", "opt-gone"} {
		if !strings.Contains(log.String(), "skipped optional dependency") || !strings.Contains(log.String(), want) {
			t.Errorf("the log does not say %s was skipped:\n%s", want, &log)
		}
	}
	if len(res.Skipped) != 4 {
		t.Errorf("skipped %v", res.Skipped)
	}
	// a required dependency failing the same way is an error
	_, err = newClient(t, reg.URL).Install(context.Background(), t.TempDir(), []Spec{{Name: "opt-win", Range: "^1"}}, &log)
	if err == nil || !strings.Contains(err.Error(), "is for os [win32]") {
		t.Fatalf("required dependency for another platform: %v", err)
	}
}

// parseOrdered agrees with encoding/json on what is JSON, and what it
// writes back reads the same.
func FuzzSavedPackageJSON(f *testing.F) {
	for _, s := range []string{"{}", "{\n  \"a\": 1\n}\n", `{"dependencies":{"b":"1"}}`, "{\r\n\t\"x\": [1, {\"y\": null}]\r\n}", `{"1":2,"a":"\u2028"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := savedPackageJSON([]byte(s), []Saved{{"a", "^1.0.0"}})
		var v map[string]any
		valid := json.Unmarshal([]byte(strings.TrimPrefix(s, "\uFEFF")), &v) == nil
		if err != nil {
			if valid && errors.Is(err, ErrPackageJSON) && !strings.Contains(err.Error(), "nested") {
				t.Fatalf("%q is a JSON object but: %v", s, err)
			}
			return
		}
		if !valid {
			t.Fatalf("%q is not a JSON object, yet saved", s)
		}
		if out == nil {
			return
		}
		var back map[string]any
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q -> %q: %v", s, out, err)
		}
		deps, _ := back["dependencies"].(map[string]any)
		if deps["a"] != "^1.0.0" {
			t.Fatalf("%q -> %q: a not saved", s, out)
		}
	})
}
