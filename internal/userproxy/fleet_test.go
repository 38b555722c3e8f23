package userproxy

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/token"
)

// TestWriteTellsTheFleet: a write the upstream takes calls
// OnPackageChanged with its package, with the cache on or off; a refused
// write and a read do not.
func TestWriteTellsTheFleet(t *testing.T) { onBothFrontEnds(t, testWriteTellsTheFleet) }

func testWriteTellsTheFleet(t *testing.T, fe frontEnd) {
	for _, cached := range []bool{true, false} {
		var mu sync.Mutex
		var changed []string
		hook := func(cfg *Config) {
			cfg.OnPackageChanged = func(pkg string) { mu.Lock(); changed = append(changed, pkg); mu.Unlock() }
		}
		var e *edge
		if cached {
			e, _ = cachedEdgeOn(t, fe, 1<<20, hook)
		} else {
			e = newEdgeOn(t, fe, hook)
		}
		auth := "Bearer " + e.tokenFor(t, "@mycompany", token.ScopeRegistryWrite, "0xa1b2c3d4") // writes need registry:write
		put := func(doc string) int {
			req, _ := http.NewRequest(http.MethodPut, e.URL+"/@mycompany%2fhello", strings.NewReader(doc))
			req.Header.Set("Authorization", auth)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		e.get(t, "/@mycompany%2fhello", map[string]string{"Authorization": auth})
		if code := put(`{}`); code != 400 {
			t.Fatalf("cache %v: refused PUT: %d", cached, code)
		}
		if code := put(publishDoc("@mycompany/hello", "1.3.0", npmfixture.Tarball(map[string]string{"index.js": "x"}))); code != 201 {
			t.Fatalf("cache %v: PUT: %d", cached, code)
		}
		mu.Lock()
		got := slices.Clone(changed)
		mu.Unlock()
		if !slices.Equal(got, []string{"@mycompany/hello"}) {
			t.Fatalf("cache %v: OnPackageChanged got %q, want the one accepted write", cached, got)
		}
	}
}

func TestPackumentKeysOf(t *testing.T) {
	match := PackumentKeysOf([]string{"@mycompany/hello", "hello-dep"})
	for key, want := range map[string]bool{
		"a1b2c3d4 /@mycompany%2fhello full http://edge":        true,
		"a1b2c3d4 /@mycompany%2fhello abbreviated http://edge": true,
		"a1b2c3d4 /@mycompany/hello full http://edge":          true,
		"a1b2c3d4 /-/package/@mycompany%2fhello/dist-tags":     true,
		"00000000 /hello-dep?write=true full http://edge":      true,
		"00000000 /-/package/hello-dep/dist-tags":              true,
		"a1b2c3d4 /@mycompany/hello/-/hello-1.2.3.tgz":         false, // tarballs do not change
		"00000000 /hello-dependency full http://edge":          false,
		"00000000 /@mycompany%2fhello-dep full http://edge":    false,
		"00000000 /-/package/hello-dependency/dist-tags":       false,
		"nonsense": false,
	} {
		if got := match(key); got != want {
			t.Errorf("%q: %v, want %v", key, got, want)
		}
		if one := packumentKeys("hello-dep")(key) || packumentKeys("@mycompany/hello")(key); one != want {
			t.Errorf("%q: packumentKeys says %v, PackumentKeysOf %v", key, one, want)
		}
	}
}

// TestMarkedStaleRevalidatesOnce: a packument marked stale (what a fleet
// hint does) is revalidated by its next request (a conditional request,
// answered 304 by an upstream that did not change) and served with the
// same bytes; the requests after it are hits again.
func TestMarkedStaleRevalidatesOnce(t *testing.T) {
	e, c := cachedEdge(t, 1<<20, nil)
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	_, first := e.get(t, "/@mycompany%2fhello", auth)
	before := e.reg.Count()
	if n := c.MarkStale(PackumentKeysOf([]string{"@mycompany/hello"})); n != 1 {
		t.Fatalf("marked %d entries, want 1", n)
	}
	for i := 0; i < 3; i++ {
		resp, body := e.get(t, "/@mycompany%2fhello", auth)
		if body != first || resp.Header.Get("X-Regedge-Cache") != "hit" {
			t.Fatalf("request %d: %s, bytes changed: %v", i, resp.Header.Get("X-Regedge-Cache"), body != first)
		}
	}
	paths, headers := e.reg.Requests()
	if len(paths)-before != 1 || headers[len(headers)-1].Get("If-None-Match") == "" {
		t.Fatalf("upstream saw %v after the mark, want one conditional request", paths[before:])
	}
}
