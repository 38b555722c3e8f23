package userproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/testutil"
)

// TestNpmInstallThroughAFaultyUpstream: the real npm client installs
// through the edge (cache on) while the upstream cuts the first answer for
// every tarball halfway (a whole Content-Length announced, then the
// connection closed). npm sees a cut response and fails cleanly (it does
// not retry a body that broke off); nothing cut was cached, so the next
// install succeeds, and the cache ends up holding only whole tarballs, byte
// for byte the registry's.
func TestNpmInstallThroughAFaultyUpstream(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	var c *edgecache.Cache
	var mu sync.Mutex
	cut := map[string]bool{}
	e := newEdge(t, func(cfg *Config) {
		var err error
		if c, err = edgecache.Open(t.TempDir(), 1<<26, edgecache.Options{Log: quiet}); err != nil {
			t.Fatal(err)
		}
		cfg.Cache, cfg.PackumentTTL, cfg.NegativeTTL = c, time.Hour, time.Minute
		// The faulty upstream: the fixture registry behind a proxy that
		// cuts each tarball's first answer halfway.
		reg := cfg.Upstreams[0].URL
		rp := httputil.NewSingleHostReverseProxy(reg)
		faulty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, ".tgz") {
				mu.Lock()
				first := !cut[r.URL.Path]
				cut[r.URL.Path] = true
				mu.Unlock()
				if first {
					resp, err := http.Get(reg.String() + r.URL.Path)
					if err != nil {
						t.Error(err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					conn, buf, _ := w.(http.Hijacker).Hijack()
					fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(body))
					buf.Write(body[:len(body)/2])
					buf.Flush()
					conn.Close()
					return
				}
			}
			rp.ServeHTTP(w, r)
		}))
		t.Cleanup(faulty.Close)
		cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(faulty.URL), AuthToken: "upstream-secret"}, {Hash: 0, URL: mustURL(faulty.URL)}}
	})
	e2, reg := e, e.reg // e2: the edge in front of the faulty upstream
	tok := e2.token(t, "0xa1b2c3d4", "0x00000000")
	dir := t.TempDir()
	home, proj := filepath.Join(dir, "home"), filepath.Join(dir, "proj")
	os.MkdirAll(home, 0o700)
	os.MkdirAll(proj, 0o700)
	hostPort := strings.TrimPrefix(e2.URL, "http://")
	os.WriteFile(filepath.Join(proj, ".npmrc"), []byte(fmt.Sprintf("registry=%s/\n//%s/:_authToken=%s\n", e2.URL, hostPort, tok)), 0o600)
	os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"proj","version":"1.0.0","private":true,"dependencies":{"@mycompany/hello":"^1.2.3"}}`), 0o644)
	install := func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn")
		cmd.Dir = proj
		cmd.Env = append(os.Environ(), "HOME="+home, "npm_config_cache="+filepath.Join(home, "cache"), "npm_config_userconfig="+filepath.Join(home, ".npmrc"),
			"npm_config_fetch_retry_mintimeout=100", "npm_config_fetch_retry_maxtimeout=500", "npm_config_fetch_retries="+strconv.Itoa(3))
		return cmd.CombinedOutput()
	}
	for attempt := 1; ; attempt++ {
		out, err := install()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(string(out), "ECONNRESET") && !strings.Contains(string(out), "aborted") {
			t.Fatalf("npm install, attempt %d: %v\n%s", attempt, err, out)
		}
		// A clean failure: whatever the cache holds is whole.
		for _, p := range []string{"/@mycompany/hello/-/hello-1.2.3.tgz", "/hello-dep/-/hello-dep-1.0.0.tgz"} {
			for _, h := range []uint32{companyHash, 0} {
				if ent, ok := c.Lookup(cacheKey(e2.proxy.routes[h], kindTarball, p, false, "")); ok && ent.Size != int64(len(reg.TarballAt(p))) {
					t.Fatalf("a cut %s was cached (%d bytes)", p, ent.Size)
				}
			}
		}
	}
	mu.Lock()
	n := len(cut)
	mu.Unlock()
	if n != 2 {
		t.Fatalf("the upstream cut %d tarballs, want both", n)
	}
	for _, p := range []string{"/@mycompany/hello/-/hello-1.2.3.tgz", "/hello-dep/-/hello-dep-1.0.0.tgz"} {
		ent, ok := c.Lookup(cacheKey(e2.proxy.routes[companyHash], kindTarball, p, false, ""))
		if !ok {
			ent, ok = c.Lookup(cacheKey(e2.proxy.routes[0], kindTarball, p, false, ""))
		}
		if !ok {
			t.Fatalf("%s is not cached after the install", p)
		}
		f, err := c.Open(&ent, false)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, ent.Size+1)
		n, _ := f.Read(got)
		f.Close()
		if want := reg.TarballAt(p); string(got[:n]) != string(want) {
			t.Fatalf("%s cached as %d bytes, the registry's is %d", p, n, len(want))
		}
	}
}
