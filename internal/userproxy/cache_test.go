package userproxy

import (
	"context"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/testutil"
)

func cachedEdge(t *testing.T, maxBytes int64, tweak func(*Config)) (*edge, *edgecache.Cache) {
	t.Helper()
	return cachedEdgeOn(t, fastFront, maxBytes, tweak)
}

// cachedEdgeOn is cachedEdge on front end fe.
func cachedEdgeOn(t *testing.T, fe frontEnd, maxBytes int64, tweak func(*Config)) (*edge, *edgecache.Cache) {
	t.Helper()
	c, err := edgecache.Open(t.TempDir(), maxBytes, edgecache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEdgeOn(t, fe, func(cfg *Config) {
		cfg.Cache, cfg.PackumentTTL, cfg.NegativeTTL, cfg.StaleIfError = c, time.Hour, time.Minute, time.Hour
		if tweak != nil {
			tweak(cfg)
		}
	})
	return e, c
}

const tarballPath = "/@mycompany/hello/-/hello-1.2.3.tgz"

func TestCacheServesTarballsAndPackuments(t *testing.T) {
	e, c := cachedEdge(t, 1<<20, nil)
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	want := string(e.reg.TarballAt(tarballPath))
	for i := 0; i < 3; i++ {
		resp, body := e.get(t, tarballPath, auth)
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("tarball %d: %d, %d bytes", i, resp.StatusCode, len(body))
		}
		_, pk := e.get(t, "/@mycompany%2fhello", auth)
		if !strings.Contains(pk, e.URL+"/@mycompany/hello/-/") {
			t.Fatalf("cached packument not rewritten to the edge: %s", pk)
		}
	}
	if n := e.reg.Count(); n != 2 {
		t.Fatalf("the upstream saw %d requests for 3 rounds, want 2 (one tarball, one packument)", n)
	}
	if promtest.ToFloat64(c.Hits) != 4 || promtest.ToFloat64(c.Misses) != 2 {
		t.Fatalf("hits %v misses %v", promtest.ToFloat64(c.Hits), promtest.ToFloat64(c.Misses))
	}
	// 404s are cached briefly too.
	e.get(t, "/nope", auth)
	e.get(t, "/nope", auth)
	if n := e.reg.Count(); n != 3 {
		t.Fatalf("a cached 404 went upstream again (%d requests)", n)
	}
}

func TestCacheRevalidatesAndServesStale(t *testing.T) {
	e, c := cachedEdge(t, 1<<20, func(cfg *Config) { cfg.PackumentTTL, cfg.StaleIfError = 0, time.Hour })
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	e.get(t, "/hello-dep", auth)
	e.get(t, "/hello-dep", auth) // expired (TTL 0): revalidated, 304
	_, h := e.reg.Last()
	if h.Get("If-None-Match") == "" {
		t.Fatal("the revalidation carried no If-None-Match")
	}
	e.reg.Close() // the upstream goes down
	resp, body := e.get(t, "/hello-dep", auth)
	if resp.StatusCode != 200 || !strings.Contains(body, `"hello-dep"`) || resp.Header.Get("Age") == "" || promtest.ToFloat64(c.Stale) != 1 {
		t.Fatalf("stale-if-error: %d Age=%q stale=%v", resp.StatusCode, resp.Header.Get("Age"), promtest.ToFloat64(c.Stale))
	}
}

func TestCorruptedCacheFileIsRefetched(t *testing.T) {
	dir := t.TempDir()
	c, _ := edgecache.Open(dir, 1<<20, edgecache.Options{})
	e := newEdge(t, func(cfg *Config) { cfg.Cache, cfg.PackumentTTL = c, time.Hour })
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	want := string(e.reg.TarballAt(tarballPath))
	e.get(t, tarballPath, auth)
	bodies, _ := filepath.Glob(filepath.Join(dir, "*.body"))
	if len(bodies) != 1 {
		t.Fatalf("%d cache files", len(bodies))
	}
	// A byte flipped in place (same file, same size): hits do not hash,
	// the scrubber finds it, and it is never served again.
	b, _ := os.ReadFile(bodies[0])
	b[len(b)/2] ^= 0xff
	os.WriteFile(bodies[0], b, 0o600)
	if n := c.Scrub(context.Background(), 0); n != 1 {
		t.Fatalf("the scrubber discarded %d entries, want 1", n)
	}
	if resp, body := e.get(t, tarballPath, auth); resp.StatusCode != 200 || body != want || resp.Header.Get("X-Regedge-Cache") != "miss" {
		t.Fatalf("after the scrub: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("X-Regedge-Cache"), len(body))
	}
	// A file replaced behind the cache's back (another inode) is caught
	// at serve time, without hashing.
	tmp := bodies[0] + ".new"
	os.WriteFile(tmp, b, 0o600)
	os.Rename(tmp, bodies[0])
	if resp, body := e.get(t, tarballPath, auth); resp.StatusCode != 200 || body != want {
		t.Fatalf("a replaced cache file was served: %d, %d bytes", resp.StatusCode, len(body))
	}
	if promtest.ToFloat64(c.Corrupt) != 2 || e.reg.Count() != 3 {
		t.Fatalf("corrupt %v, upstream requests %d", promtest.ToFloat64(c.Corrupt), e.reg.Count())
	}
	// Hits hash nothing: the refill hashed once, ten hits add nothing.
	hashed := c.HashedBytes()
	for range 10 {
		if resp, body := e.get(t, tarballPath, auth); body != want || resp.Header.Get("X-Regedge-Cache") != "hit" {
			t.Fatalf("hit: %s", resp.Header.Get("X-Regedge-Cache"))
		}
	}
	if c.HashedBytes() != hashed {
		t.Fatalf("ten hits hashed %d bytes", c.HashedBytes()-hashed)
	}
}

func TestCacheEvictionKeepsTheBound(t *testing.T) {
	const bound = 5 * 4096 // blocks on disk: room for about two small entries
	e, c := cachedEdge(t, bound, nil)
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4", "0x00000000")}
	for _, p := range []string{"/hello-dep", "/@mycompany%2fhello", "/hello-dep/-/hello-dep-1.0.0.tgz", tarballPath, "/nope", "/nope2"} {
		if resp, _ := e.get(t, p, auth); resp.StatusCode != 200 && resp.StatusCode != 404 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
		if c.Used() > bound {
			t.Fatalf("cache holds %d bytes on disk, bound %d", c.Used(), bound)
		}
	}
	if promtest.ToFloat64(c.Evictions) == 0 {
		t.Fatal("nothing was evicted")
	}
}

func TestConcurrentMissesFetchOnce(t *testing.T) {
	e, _ := cachedEdge(t, 1<<20, nil)
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, e.URL+tarballPath, nil)
			req.Header.Set("Authorization", auth["Authorization"])
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if n := e.reg.Count(); n > 2 {
		// One fetch; a request that arrived after the first finished is a hit.
		t.Fatalf("20 concurrent misses made %d upstream requests", n)
	}
}

// TestNpmInstallFromCacheWithUpstreamDown: a second npm install, with a
// fresh npm cache and the upstream stopped, succeeds from the edge cache.
func TestNpmInstallFromCacheWithUpstreamDown(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	e, c := cachedEdge(t, 1<<20, func(cfg *Config) {
		cfg.Upstreams = append(cfg.Upstreams, Upstream{Hash: 0, URL: cfg.Upstreams[0].URL})
		cfg.PackumentTTL = 0 // every packument request revalidates: down means stale
	})
	tok := e.token(t, "0xa1b2c3d4", "0x00000000")
	install := func(name string) error {
		dir := filepath.Join(t.TempDir(), name)
		os.MkdirAll(filepath.Join(dir, "home"), 0o700)
		npmrc := fmt.Sprintf("registry=%s/\n//%s/:_authToken=%s\n", e.URL, strings.TrimPrefix(e.URL, "http://"), tok)
		os.WriteFile(filepath.Join(dir, ".npmrc"), []byte(npmrc), 0o600)
		os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"p","version":"1.0.0","private":true}`), 0o644)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn", "@mycompany/hello")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+filepath.Join(dir, "home"), "npm_config_cache="+filepath.Join(dir, "npm-cache"))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	}
	if err := install("first"); err != nil {
		t.Fatal(err)
	}
	e.reg.Close()
	if err := install("second"); err != nil {
		t.Fatalf("install with the upstream down: %v", err)
	}
	if promtest.ToFloat64(c.Stale) == 0 || promtest.ToFloat64(c.Hits) == 0 {
		t.Fatalf("stale %v hits %v", promtest.ToFloat64(c.Stale), promtest.ToFloat64(c.Hits))
	}
	// With the cache on, npm's requests still come in on the fast path
	// (served by the cache code through the bridge).
	if n := promtest.ToFloat64(e.proxy.handedOn); n != 0 {
		t.Errorf("%v connections handed to net/http", n)
	}
}

func TestPurgeKeys(t *testing.T) {
	keys := []string{
		"a1b2c3d4 /@mycompany%2fhello", "a1b2c3d4 /@mycompany%2fhello abbreviated",
		"a1b2c3d4 /@mycompany/hello/-/hello-1.2.3.tgz", "a1b2c3d4 /@mycompany/hello/-/hello-1.2.4.tgz",
		"00000000 /hello-dep", "00000000 /hello-dep/-/hello-dep-1.0.0.tgz", "00000000 /hello-dependency",
	}
	count := func(m func(string) bool) (n int) {
		for _, k := range keys {
			if m(k) {
				n++
			}
		}
		return n
	}
	if n := count(PurgeKeys("@mycompany/hello", "")); n != 4 {
		t.Errorf("package purge matched %d, want 4", n)
	}
	if n := count(PurgeKeys("@mycompany/hello", "1.2.3")); n != 3 {
		t.Errorf("version purge matched %d, want 3 (two packuments, one tarball)", n)
	}
	if n := count(PurgeKeys("hello-dep", "")); n != 2 {
		t.Errorf("hello-dep purge matched %d, want 2 (not hello-dependency)", n)
	}
}

// TestPublishThroughTheEdgeDropsThePackument: a write the upstream takes
// makes the cached packuments of that package (and only those) go away;
// the tarballs, immutable, stay.
func TestPublishThroughTheEdgeDropsThePackument(t *testing.T) {
	e, c := cachedEdge(t, 1<<20, nil)
	auth := map[string]string{"Authorization": "Bearer " + e.tokenFor(t, "release", "registry:write", "0xa1b2c3d4")}
	e.get(t, "/@mycompany%2fhello", auth)
	e.get(t, tarballPath, auth)
	e.get(t, "/hello-dep", auth)
	before := e.reg.Count()

	put := func(path, doc string) int {
		req, _ := http.NewRequest(http.MethodPut, e.URL+path, strings.NewReader(doc))
		req.Header.Set("Authorization", auth["Authorization"])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("/@mycompany%2fhello", publishDoc("@mycompany/hello", "1.3.0", npmfixture.Tarball(map[string]string{"index.js": "x"}))); code != 201 {
		t.Fatalf("PUT: %d", code)
	}
	e.get(t, "/@mycompany%2fhello", auth) // refetched
	e.get(t, tarballPath, auth)           // still cached
	e.get(t, "/hello-dep", auth)          // another package: still cached
	if n := e.reg.Count() - before; n != 2 {
		t.Fatalf("after the publish the upstream saw %d requests, want 2 (the PUT, the packument)", n)
	}
	// a refused write (not a publish document) drops nothing
	before = e.reg.Count()
	if code := put("/@mycompany%2fhello", `{}`); code != 400 {
		t.Fatalf("PUT of a bad document: %d", code)
	}
	e.get(t, "/@mycompany%2fhello", auth)
	if n := e.reg.Count() - before; n != 1 {
		t.Fatalf("a refused write dropped cached entries (%d upstream requests)", n)
	}
	if promtest.ToFloat64(c.Hits) != 3 { // tarball, hello-dep, the packument after the refused write
		t.Fatalf("hits %v", promtest.ToFloat64(c.Hits))
	}
	for path, want := range map[string]string{"/left-pad": "left-pad", "/@s/x": "@s/x", "/@s%2fx": "@s/x", "/%40s%2fx": "@s/x", "/%40s%2Fx/-rev/1-a": "@s/x", "/-/package/@s%2fx/dist-tags/latest": "@s/x", "/-/package/left-pad/dist-tags": "left-pad", "/-/user/org.couchdb.user:a": "", "/x/-rev/1-abc": "x", "/": "", "/@s": ""} {
		if got := packageOf(path); got != want {
			t.Errorf("packageOf(%q) = %q, want %q", path, got, want)
		}
	}
}

// publishDoc is the document npm publish PUTs for one version.
func publishDoc(name, version string, tgz []byte) string {
	sum1, sum512 := sha1.Sum(tgz), sha512.Sum512(tgz)
	doc, _ := json.Marshal(map[string]any{
		"name": name,
		"versions": map[string]any{version: map[string]any{"name": name, "version": version, "dist": map[string]any{
			"shasum": hex.EncodeToString(sum1[:]), "integrity": "sha512-" + base64.StdEncoding.EncodeToString(sum512[:]),
		}}},
		"_attachments": map[string]any{name + "-" + version + ".tgz": map[string]any{
			"data": base64.StdEncoding.EncodeToString(tgz), "length": len(tgz),
		}},
	})
	return string(doc)
}
