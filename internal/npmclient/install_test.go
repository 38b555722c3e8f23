package npmclient

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/npmclient/npmfixture"
)

func pkgJSON(name, version string) string {
	return `{"name":"` + name + `","version":"` + version + `"}`
}

func add(r *npmfixture.Registry, name, version string, deps map[string]string, mod func(*npmfixture.Package)) {
	p := npmfixture.Package{Name: name, Version: version, Deps: deps,
		Files: map[string]string{"package.json": pkgJSON(name, version), "index.js": "module.exports = '" + name + "@" + version + "'\n"}}
	if mod != nil {
		mod(&p)
	}
	r.Add(p)
}

func newClient(t *testing.T, reg string) *Client {
	u, err := url.Parse(reg)
	if err != nil {
		t.Fatal(err)
	}
	return &Client{Registry: u, Token: "tok", State: codec.DefaultState(), HTTP: http.DefaultClient}
}

func version(t *testing.T, dir, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel), "package.json"))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	s := string(b)
	i := strings.Index(s, `"version":"`)
	return strings.TrimSuffix(s[i+len(`"version":"`):], `"}`)
}

func TestInstallHoistsNestsAndVerifies(t *testing.T) {
	reg := npmfixture.New(t)
	add(reg, "a", "1.0.0", map[string]string{"b": "^1.0.0"}, nil)
	add(reg, "c", "1.0.0", map[string]string{"b": "^2.0.0", "@s/d": "~0.1.0"}, nil)
	add(reg, "b", "1.1.0", nil, func(p *npmfixture.Package) { p.SHA1Only = true })
	add(reg, "b", "1.2.0", nil, func(p *npmfixture.Package) { p.SHA1Only = true })
	add(reg, "b", "2.0.0", nil, nil)
	add(reg, "@s/d", "0.1.3", nil, nil)
	add(reg, "@s/d", "0.2.0", nil, nil)

	dir := t.TempDir()
	// another scoped package already installed must survive
	os.MkdirAll(filepath.Join(dir, "node_modules/@s/keep"), 0o755)
	c := newClient(t, reg.URL)
	var log bytes.Buffer
	got, err := c.Install(context.Background(), dir, []Spec{ParseSpec("a"), ParseSpec("c@1")}, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, &log)
	}
	if len(got.Packages) != 5 {
		t.Fatalf("installed %v", got.Packages)
	}
	for rel, want := range map[string]string{
		"node_modules/a":                "1.0.0",
		"node_modules/c":                "1.0.0",
		"node_modules/b":                "1.2.0", // hoisted: first asked for by a
		"node_modules/c/node_modules/b": "2.0.0", // nested: c's range conflicts
		"node_modules/@s/d":             "0.1.3", // ~0.1.0 excludes 0.2.0
	} {
		if v := version(t, dir, rel); v != want {
			t.Errorf("%s = %s, want %s", rel, v, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules/@s/keep")); err != nil {
		t.Errorf("@s/keep was removed: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".regedge-install-*")); len(m) != 0 {
		t.Errorf("staging left behind: %v", m)
	}
	// every request carried the config headers and the token
	for _, h := range reg.Seen {
		if h.Get(codec.HeaderConfigVersion) == "" || h.Get(codec.HeaderRegistryHash) == "" || h.Get("Authorization") != "Bearer tok" {
			t.Fatalf("request without config headers or token: %v", h)
		}
	}
}

func TestInstallFailureChangesNothing(t *testing.T) {
	reg := npmfixture.New(t)
	add(reg, "good", "1.0.0", map[string]string{"bad": "1", "evil": "1"}, nil)
	add(reg, "bad", "1.0.0", nil, func(p *npmfixture.Package) { p.BadIntegrity = true })
	add(reg, "evil", "1.0.0", nil, func(p *npmfixture.Package) {
		p.Tarball = npmfixture.RawTarball([]npmfixture.Entry{{Name: "package/../../../evil", Type: '0', Body: "x"}})
	})
	add(reg, "good", "0.9.0", nil, nil)

	dir := t.TempDir()
	c := newClient(t, reg.URL)
	if _, err := c.Install(context.Background(), dir, []Spec{ParseSpec("good@0.9.0")}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	before := tree(t, dir)
	cases := map[string]string{
		"integrity": "integrity check failed",
		"missing":   "not found",
		"no match":  "no version matches",
		"hostile":   "climbs out",
	}
	specs := map[string][]Spec{
		"integrity": {ParseSpec("good@1.0.0")},
		"missing":   {ParseSpec("nope")},
		"no match":  {ParseSpec("good@^3")},
		"hostile":   {ParseSpec("evil")},
	}
	for name, want := range cases {
		_, err := c.Install(context.Background(), dir, specs[name], &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: err = %v, want %q", name, err, want)
		}
		if after := tree(t, dir); after != before {
			t.Fatalf("%s: the project changed:\nbefore %s\nafter  %s", name, before, after)
		}
	}
}

// tree lists every path under dir with its size.
func tree(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			rel, _ := filepath.Rel(dir, p)
			b.WriteString(rel + " ")
		}
		return nil
	})
	return b.String()
}

func TestParseSpec(t *testing.T) {
	for in, want := range map[string]Spec{
		"left-pad":               {Name: "left-pad", Range: "latest"},
		"left-pad@^1.3":          {Name: "left-pad", Range: "^1.3"},
		"left-pad@":              {Name: "left-pad", Range: "latest"},
		"@scope/pkg":             {Name: "@scope/pkg", Range: "latest"},
		"@scope/pkg@1.2.3":       {Name: "@scope/pkg", Range: "1.2.3"},
		"@scope/pkg@next":        {Name: "@scope/pkg", Range: "next"},
		"pad@npm:left-pad@^1":    {Name: "pad", Range: "npm:left-pad@^1"},
		"@s/pad@npm:@t/pad@~1.2": {Name: "@s/pad", Range: "npm:@t/pad@~1.2"},
	} {
		if got := ParseSpec(in); got != want {
			t.Errorf("ParseSpec(%q) = %v, want %v", in, got, want)
		}
	}
}
