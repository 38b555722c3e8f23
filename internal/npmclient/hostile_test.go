package npmclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/npmclient/npmfixture"
)

// A registry names dependencies, aliases and bundled packages; each name
// is checked before it becomes a path, so none reaches outside the project
// (the attack: "../../../<dir>/pwned" made install write there).
func TestInstallRefusesBadNamesFromTheRegistry(t *testing.T) {
	const climb = "../../../outside/pwned" // from DIR/.regedge-install-*/node_modules to DIR/../outside
	for _, tc := range []struct {
		name    string
		pkg     func(*npmfixture.Package)
		bad     string
		kind    string
		planted string // a package the attacker serves under the bad name
	}{
		{"dependency", func(p *npmfixture.Package) { p.Deps = map[string]string{climb: "1.0.0"} }, climb, "dependency", climb},
		{"scoped dependency", func(p *npmfixture.Package) { p.Deps = map[string]string{"@x/../../../../outside/pwned": "1.0.0"} }, "@x/../../../../outside/pwned", "dependency", "@x/../../../../outside/pwned"},
		{"dot scope part", func(p *npmfixture.Package) { p.Deps = map[string]string{"@x/..": "1.0.0"} }, "@x/..", "dependency", "@x/.."},
		{"absolute", func(p *npmfixture.Package) { p.Deps = map[string]string{"/tmp/pwned": "1.0.0"} }, "/tmp/pwned", "dependency", "/tmp/pwned"},
		{"optional dependency", func(p *npmfixture.Package) { p.Optional = map[string]string{climb: "1.0.0"} }, climb, "dependency", climb},
		{"alias target", func(p *npmfixture.Package) { p.Deps = map[string]string{"innocent": "npm:" + climb + "@1.0.0"} }, climb, "alias target", climb},
		{"bundled", func(p *npmfixture.Package) {
			p.Deps = map[string]string{"ok": "1.0.0"}
			p.Extra = map[string]any{"bundleDependencies": []string{climb}}
		}, climb, "bundled dependency", climb},
		{"backslash", func(p *npmfixture.Package) { p.Deps = map[string]string{`..\..\pwned`: "1.0.0"} }, `..\..\pwned`, "dependency", `..\..\pwned`},
		{"leading dot", func(p *npmfixture.Package) { p.Deps = map[string]string{".bin": "1.0.0"} }, ".bin", "dependency", ".bin"},
		{"node_modules", func(p *npmfixture.Package) { p.Deps = map[string]string{"node_modules": "1.0.0"} }, "node_modules", "dependency", "node_modules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := npmfixture.New(t)
			add(reg, "evil", "1.0.0", nil, tc.pkg)
			add(reg, "ok", "1.0.0", nil, nil)
			add(reg, tc.planted, "1.0.0", nil, nil)
			base := t.TempDir()
			dir := filepath.Join(base, "project")
			os.MkdirAll(filepath.Join(dir, "node_modules", "kept"), 0o755)
			before := tree(t, base)
			_, err := newClient(t, reg.URL).Install(context.Background(), dir, []Spec{ParseSpec("evil")}, &bytes.Buffer{})
			var bad *BadNameError
			if !errors.As(err, &bad) || !errors.Is(err, ErrBadName) {
				t.Fatalf("err = %v, want a BadNameError", err)
			}
			if bad.Name != tc.bad || bad.Wanted != "evil@1.0.0" || bad.Kind != tc.kind {
				t.Fatalf("error names %q (%s) asked for by %q, want %q (%s) by evil@1.0.0", bad.Name, bad.Kind, bad.Wanted, tc.bad, tc.kind)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tc.bad)) || !strings.Contains(err.Error(), "evil@1.0.0") {
				t.Fatalf("message %q does not name the package and who asked", err)
			}
			if after := tree(t, base); after != before {
				t.Fatalf("the file system changed:\nbefore %s\nafter  %s", before, after)
			}
			if _, err := os.Stat(filepath.Join(base, "outside")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the attack reached outside the project: %v", err)
			}
		})
	}
}

// The names npm's rules allow, and the ones they refuse.
func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "left-pad", "lodash.get", "@babel/core", "@s/x.y_z-1", "JSONStream", "a~b", "it's(ok)!*", strings.Repeat("a", 214), "@types/_underscore"} {
		if why := CheckName(ok); why != "" {
			t.Errorf("CheckName(%q) = %q, want ok", ok, why)
		}
	}
	for _, bad := range []string{"", ".", "..", ".bin", "_private", "a/b", "@s", "@s/", "@/x", "@s/x/y", "@s/..", "@../x", "@s/.x",
		"a b", " a", "a%2f", "ü", "node_modules", "favicon.ico", strings.Repeat("a", 215), `a\b`, "a:b", "a?b", "a#b", "\x00"} {
		if CheckName(bad) == "" {
			t.Errorf("CheckName(%q) accepted it", bad)
		}
	}
}

// Every name CheckName accepts stays one directory below node_modules (a
// scope and a name for @scope/name), whatever the string.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"a", "@s/x", "../x", "@s/..", "a/b", ".", "@./x", "x\\..\\y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckName(name) != "" {
			return
		}
		p := filepath.Join("/p/node_modules", name)
		rel, err := filepath.Rel("/p/node_modules", p)
		if err != nil || rel != name || strings.HasPrefix(rel, ".") {
			t.Fatalf("%q leads to %s", name, p)
		}
		if want := 1 + strings.Count(name, "/"); len(strings.Split(rel, "/")) != want || want > 2 {
			t.Fatalf("%q is %d levels deep", name, want)
		}
	})
}

// The cycle with a version conflict: a@1 -> b@1 -> a@2 -> b@2 ->
// a@2. It used to grow without end; now the copy of a@2 placed for b@1
// satisfies b@2, as in npm.
func TestInstallCycleWithVersionConflictTerminates(t *testing.T) {
	reg := npmfixture.New(t)
	add(reg, "a", "1.0.0", map[string]string{"b": "1"}, nil)
	add(reg, "b", "1.0.0", map[string]string{"a": "2"}, nil)
	add(reg, "a", "2.0.0", map[string]string{"b": "2"}, nil)
	add(reg, "b", "2.0.0", map[string]string{"a": "2"}, nil)
	dir := t.TempDir()
	res, err := newClient(t, reg.URL).Install(context.Background(), dir, []Spec{ParseSpec("a@1")}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ // what npm 11 lays out for the same registry
		"node_modules/a":                "1.0.0",
		"node_modules/b":                "1.0.0",
		"node_modules/b/node_modules/a": "2.0.0",
		"node_modules/b/node_modules/b": "2.0.0",
	}
	for rel, v := range want {
		if got := version(t, dir, rel); got != v {
			t.Errorf("%s = %s, want %s", rel, got, v)
		}
	}
	if len(res.Packages) != len(want) {
		t.Fatalf("installed %v, want the %d of %v", res.Packages, len(want), want)
	}
}

// A package that needs another version of itself, which needs the first
// again: npm links the inner one to the outer copy; so does this.
func TestInstallSelfCycleLinksToTheAncestor(t *testing.T) {
	reg := npmfixture.New(t)
	add(reg, "x", "1.0.0", map[string]string{"x": "2"}, nil)
	add(reg, "x", "2.0.0", map[string]string{"x": "1"}, nil)
	dir := t.TempDir()
	if _, err := newClient(t, reg.URL).Install(context.Background(), dir, []Spec{ParseSpec("x@1")}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if v := version(t, dir, "node_modules/x/node_modules/x"); v != "2.0.0" {
		t.Fatalf("nested x = %s", v)
	}
	link := filepath.Join(dir, "node_modules/x/node_modules/x/node_modules/x")
	if target, err := os.Readlink(link); err != nil || target != "../../.." {
		t.Fatalf("link = %q, %v; want ../../.. (node_modules/x)", target, err)
	}
	if v := version(t, dir, "node_modules/x/node_modules/x/node_modules/x"); v != "1.0.0" {
		t.Fatalf("through the link: %s", v)
	}
}

// A registry that keeps answering with new conflicting versions can make
// no tree settle: resolution stops at MaxDepth with an error naming the
// cycle, and writes nothing.
func TestInstallEndlessChainStopsAtTheDepthLimit(t *testing.T) {
	old := MaxDepth
	MaxDepth = 6
	t.Cleanup(func() { MaxDepth = old })
	reg := npmfixture.New(t)
	for i := 1; i <= 40; i++ {
		add(reg, "x", fmt.Sprintf("%d.0.0", i), map[string]string{"y": fmt.Sprint(i)}, nil)
		add(reg, "y", fmt.Sprintf("%d.0.0", i), map[string]string{"x": fmt.Sprint(i + 1)}, nil)
	}
	dir := t.TempDir()
	before := tree(t, dir)
	_, err := newClient(t, reg.URL).Install(context.Background(), dir, []Spec{ParseSpec("x@1")}, &bytes.Buffer{})
	if !errors.Is(err, ErrCycle) {
		t.Fatalf("err = %v, want ErrCycle", err)
	}
	for _, want := range []string{"through x, y", "deeper than 6 levels", "x@1.0.0 > y@1.0.0 > x@2.0.0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	if after := tree(t, dir); after != before {
		t.Fatalf("a failed resolution wrote: %s", after)
	}
}

// A registry with a wide tree stops at MaxPackages.
func TestInstallStopsAtThePackageLimit(t *testing.T) {
	old := MaxPackages
	MaxPackages = 10
	t.Cleanup(func() { MaxPackages = old })
	reg := npmfixture.New(t)
	deps := map[string]string{}
	for i := range 20 {
		name := fmt.Sprintf("leaf%d", i)
		deps[name] = "1"
		add(reg, name, "1.0.0", nil, nil)
	}
	add(reg, "wide", "1.0.0", deps, nil)
	_, err := newClient(t, reg.URL).Install(context.Background(), t.TempDir(), []Spec{ParseSpec("wide")}, &bytes.Buffer{})
	if !errors.Is(err, ErrTooManyPackages) {
		t.Fatalf("err = %v", err)
	}
}

// The token and the config headers go to the registry only: a tarball on
// another origin (here another loopback port, as the issue found a token
// sent to another host) is fetched without them, whether the packument
// points there or the registry redirects there.
func TestCredentialsStayWithTheRegistry(t *testing.T) {
	for _, how := range []string{"dist.tarball elsewhere", "redirect"} {
		t.Run(how, func(t *testing.T) {
			other := npmfixture.New(t)
			add(other, "greet", "1.0.0", nil, nil)
			reg := npmfixture.New(t)
			reg.RequireToken = "user-token"
			add(reg, "greet", "1.0.0", nil, func(p *npmfixture.Package) {
				if how == "dist.tarball elsewhere" {
					p.TarballBase = other.URL
				}
			})
			if how == "redirect" {
				reg.RedirectTarballs = other.URL
			}
			c := newClient(t, reg.URL)
			c.Token = "user-token"
			if _, err := c.Install(context.Background(), t.TempDir(), []Spec{ParseSpec("greet")}, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			_, regHeaders := reg.Requests()
			for _, h := range regHeaders {
				if h.Get("Authorization") != "Bearer user-token" || h.Get(codec.HeaderConfigVersion) == "" {
					t.Fatalf("a registry request lacked the token or config headers: %v", h)
				}
			}
			paths, headers := other.Requests()
			if len(paths) != 1 || !strings.HasSuffix(paths[0], ".tgz") {
				t.Fatalf("the other origin saw %v, want the one tarball", paths)
			}
			for k := range headers[0] {
				if k == "Authorization" || strings.HasPrefix(k, "X-Bun-") {
					t.Fatalf("the other origin got %s: %v", k, headers[0])
				}
			}
		})
	}
}

// An .npmrc token for the tarball's own host is sent there, as npm does;
// the registry's token is not.
func TestNpmrcTokenFollowsItsOwnHost(t *testing.T) {
	other := npmfixture.New(t)
	add(other, "greet", "1.0.0", nil, nil)
	reg := npmfixture.New(t)
	add(reg, "greet", "1.0.0", nil, func(p *npmfixture.Package) { p.TarballBase = other.URL })
	c := newClient(t, reg.URL)
	c.Token = ""
	ou, _ := url.Parse(other.URL)
	ru, _ := url.Parse(reg.URL)
	c.AuthTokens = map[string]string{"//" + ru.Host + "/": "reg-token", "//" + ou.Host + "/": "other-token"}
	if _, err := c.Install(context.Background(), t.TempDir(), []Spec{ParseSpec("greet")}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if _, h := reg.Last(); h.Get("Authorization") != "Bearer reg-token" {
		t.Fatalf("registry got %q", h.Get("Authorization"))
	}
	if _, h := other.Last(); h.Get("Authorization") != "Bearer other-token" || h.Get(codec.HeaderConfigVersion) != "" {
		t.Fatalf("tarball host got %v", h)
	}
}

// within and tokenFor decide what goes where; the table is npm's key
// matching plus scheme, port and dot segments.
func TestOriginRules(t *testing.T) {
	reg, _ := url.Parse("https://r.example/npm/")
	c := &Client{Registry: reg, Token: "flag", AuthTokens: map[string]string{
		"//r.example/npm/": "npmrc-npm", "//cdn.example/": "npmrc-cdn", "//cdn.example:8443/deep/": "npmrc-deep", "//[::1]:4873/": "npmrc-v6",
	}}
	for _, tc := range []struct {
		u              string
		within         bool
		token, npmrcOf string
	}{
		{"https://r.example/npm/x", true, "flag", "npmrc-npm"},
		{"https://r.example:443/npm/@s%2fx", true, "flag", "npmrc-npm"},
		{"https://R.EXAMPLE/npm/x/-/x-1.tgz", true, "flag", "npmrc-npm"},
		{"https://r.example/npm", true, "flag", ""},
		{"https://r.example/npmx", false, "", ""},
		{"https://r.example/other/x", false, "", ""},
		{"https://r.example/npm/../admin", false, "", ""},
		{"https://r.example/npm/%2e%2e/admin", false, "", ""},
		{"https://r.example/npm/..%2fadmin", false, "", ""},
		{"https://r.example/npm/.%5c..%5cadmin", false, "", ""},
		{"https://u:p@r.example/npm/x", false, "", ""},
		{"http://r.example/npm/x", false, "", "npmrc-npm"}, // never downgraded: no token at all
		{"https://r.example:8443/npm/x", false, "", ""},
		{"https://cdn.example/x.tgz", false, "npmrc-cdn", "npmrc-cdn"},
		{"https://cdn.example:8443/deep/x.tgz", false, "npmrc-deep", "npmrc-deep"},
		{"https://cdn.example:8443/shallow/x.tgz", false, "", ""},
		{"https://evil.example/x.tgz", false, "", ""},
		{"https://[::1]:4873/x", false, "npmrc-v6", "npmrc-v6"},
	} {
		u, err := url.Parse(tc.u)
		if err != nil {
			t.Fatal(err)
		}
		if got := within(reg, u); got != tc.within {
			t.Errorf("within(%s) = %t", tc.u, got)
		}
		if got := c.tokenFor(reg, u); got != tc.token {
			t.Errorf("tokenFor(%s) = %q, want %q", tc.u, got, tc.token)
		}
		if got := npmrcToken(c.AuthTokens, u); got != tc.npmrcOf {
			t.Errorf("npmrcToken(%s) = %q, want %q", tc.u, got, tc.npmrcOf)
		}
	}
}

// A config header set is never carried to another origin by a redirect
// from the registry's tarball URL, even when Go itself would (same host,
// other port).
func TestRedirectKeepsHeadersOnlyWithinTheRegistry(t *testing.T) {
	other := npmfixture.New(t)
	add(other, "greet", "1.0.0", nil, nil)
	reg := npmfixture.New(t)
	add(reg, "greet", "1.0.0", nil, nil)
	reg.RedirectTarballs = other.URL
	c := newClient(t, reg.URL)
	c.HTTP = &http.Client{}
	if _, err := c.Install(context.Background(), t.TempDir(), []Spec{ParseSpec("greet")}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if _, h := other.Last(); h.Get("Authorization") != "" || h.Get(codec.HeaderRegistryHash) != "" || h.Get(codec.HeaderRequestID) != "" {
		t.Fatalf("redirected request carried %v", h)
	}
}

// A version key that is not a semver version is not a version: a dist-tag
// pointing at one finds nothing, so nothing odd reaches package.json.
func TestPackumentDropsVersionsThatAreNotSemver(t *testing.T) {
	reg := npmfixture.New(t)
	add(reg, "odd", "1.0.0", nil, nil)
	add(reg, "odd", "2.0.0/../../x", nil, nil)
	add(reg, "odd", "v3.0.0", nil, nil)
	reg.SetDistTag("odd", "latest", "2.0.0/../../x")
	reg.SetDistTag("odd", "v", "v3.0.0")
	c := newClient(t, reg.URL)
	p, err := c.Packument(context.Background(), "odd")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Versions) != 1 || p.Versions["1.0.0"] == nil {
		t.Fatalf("versions %v", p.Versions)
	}
	for _, spec := range []string{"odd", "odd@v"} {
		if _, err := c.Install(context.Background(), t.TempDir(), []Spec{ParseSpec(spec)}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "no dist-tag") {
			t.Errorf("%s: %v", spec, err)
		}
	}
}
