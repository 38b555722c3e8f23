package userproxy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/testutil"
)

// TestTarball404Expires: a tarball asked for before it is published is a
// 404, kept only for negativeTTL: once published (and the TTL past) it is
// served, and from then on it is immutable. Before, the 404 stayed until a
// manual purge, breaking the release for everyone behind the edge.
func TestTarball404Expires(t *testing.T) {
	e, c := cachedEdge(t, 1<<24, func(cfg *Config) { cfg.NegativeTTL = 300 * time.Millisecond })
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	const path = "/late/-/late-1.0.0.tgz"
	if resp, _ := e.get(t, path, auth); resp.StatusCode != 404 {
		t.Fatalf("before the publish: %d", resp.StatusCode)
	}
	e.reg.Add(npmfixture.Package{Name: "late", Version: "1.0.0", Files: map[string]string{"index.js": "1"}})
	testutil.Eventually(t, 10*time.Second, "the tarball's 404 to expire", func() bool {
		resp, _ := e.get(t, path, auth)
		return resp.StatusCode == 200
	})
	upstream := e.reg.Count()
	for i := 0; i < 3; i++ {
		if resp, body := e.get(t, path, auth); resp.StatusCode != 200 || body != string(e.reg.TarballAt(path)) {
			t.Fatalf("published tarball: %d", resp.StatusCode)
		}
	}
	if e.reg.Count() != upstream {
		t.Fatal("a tarball's 200 was not kept")
	}
	// Negative entries count what they cost on disk (at least a block of
	// metadata each), not their few body bytes.
	for i := 0; i < 20; i++ {
		e.get(t, fmt.Sprintf("/nope-%d/-/nope-%d-1.0.0.tgz", i, i), auth)
	}
	if c.Used() < 20*4096 {
		t.Fatalf("20 cached 404s count %d bytes", c.Used())
	}
}

// echoUpstream answers every GET with its path and query as JSON (and
// counts requests), takes PUTs of dist-tags, and serves the dist-tags it
// holds: enough to tell cached answers from fresh ones.
type echoUpstream struct {
	*httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	latest   string
}

func newEchoUpstream(t *testing.T) *echoUpstream {
	u := &echoUpstream{latest: "1.0.0"}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		u.mu.Lock()
		defer u.mu.Unlock()
		switch {
		case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/dist-tags/latest"):
			b, _ := io.ReadAll(r.Body)
			json.Unmarshal(b, &u.latest)
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"ok":true}`)
		case strings.HasSuffix(r.URL.Path, "/dist-tags"):
			fmt.Fprintf(w, `{"latest":%q}`, u.latest)
		default:
			json.NewEncoder(w).Encode(map[string]any{"name": "echo", "path": r.URL.Path, "query": r.URL.RawQuery, "n": u.requests.Load()})
		}
	}))
	t.Cleanup(u.Close)
	return u
}

// TestCacheKeysAndBypass: the query is part of the key; per-user and live
// endpoints (whoami, ping, search, /-/npm/v1/*) are never cached; a
// dist-tag PUT through the edge drops the cached dist-tags.
func TestCacheKeysAndBypass(t *testing.T) {
	up := newEchoUpstream(t)
	e, _ := cachedEdge(t, 1<<24, func(cfg *Config) { cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}} })
	auth := map[string]string{"Authorization": "Bearer " + e.tokenFor(t, "release", "registry:write", "0xa1b2c3d4")}
	_, react := e.get(t, "/-/v1/search?text=react", auth)
	resp, lodash := e.get(t, "/-/v1/search?text=lodash", auth)
	if !strings.Contains(react, `"query":"text=react"`) || !strings.Contains(lodash, `"query":"text=lodash"`) {
		t.Fatalf("search answers: %s / %s", react, lodash)
	}
	if resp.Header.Get("X-Regedge-Cache") != "bypass" {
		t.Errorf("search: X-Regedge-Cache %q, want bypass", resp.Header.Get("X-Regedge-Cache"))
	}
	// A cacheable path: each query its own entry.
	_, a := e.get(t, "/echo?v=1", auth)
	_, b := e.get(t, "/echo?v=2", auth)
	if !strings.Contains(a, `"query":"v=1"`) || !strings.Contains(b, `"query":"v=2"`) {
		t.Fatalf("one cached packument for two queries: %s / %s", a, b)
	}
	for _, p := range []string{"/-/whoami", "/-/ping", "/-/ping?write=true", "/-/v1/search?text=x", "/-/npm/v1/user", "/-/npm/v1/tokens"} {
		before := up.requests.Load()
		for i := 0; i < 2; i++ {
			resp, _ := e.get(t, p, auth)
			if got := resp.Header.Get("X-Regedge-Cache"); got != "bypass" {
				t.Errorf("%s: X-Regedge-Cache %q, want bypass", p, got)
			}
		}
		if n := up.requests.Load() - before; n != 2 {
			t.Errorf("%s: the upstream saw %d of 2 requests: cached", p, n)
		}
	}
	// dist-tags: cached, then dropped by a PUT through the edge.
	e.get(t, "/-/package/echo/dist-tags", auth)
	if resp, body := e.get(t, "/-/package/echo/dist-tags", auth); resp.Header.Get("X-Regedge-Cache") != "hit" || !strings.Contains(body, "1.0.0") {
		t.Fatalf("dist-tags not cached: %s %s", resp.Header.Get("X-Regedge-Cache"), body)
	}
	if resp, _ := e.do(t, http.MethodPut, "/-/package/echo/dist-tags/latest", `"2.0.0"`, auth); resp.StatusCode != 201 {
		t.Fatalf("dist-tag PUT: %d", resp.StatusCode)
	}
	if resp, body := e.get(t, "/-/package/echo/dist-tags", auth); !strings.Contains(body, "2.0.0") {
		t.Fatalf("after the dist-tag PUT: %s %s", resp.Header.Get("X-Regedge-Cache"), body)
	}
	// With the upstream down, ping is not answered from a cache.
	up.Close()
	if resp, body := e.get(t, "/-/ping", auth); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("ping with the upstream down: %d %s", resp.StatusCode, body)
	}
}

// TestGzipped404NotStoredRaw: an upstream 404 sent gzipped (the edge asked
// for gzip for a client that takes it) is not stored as it came: served
// later without its Content-Encoding, its bytes would be garbage.
func TestGzipped404NotStoredRaw(t *testing.T) { onBothFrontEnds(t, testGzipped404NotStoredRaw) }

func testGzipped404NotStoredRaw(t *testing.T, fe frontEnd) {
	var asked atomic.Int64
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		if asked.Add(1) > 1 { // the second time plain: the client does not take gzip
			io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"error\":\"Not found\"}")
			return
		}
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		io.WriteString(zw, `{"error":"Not found"}`)
		zw.Close()
		fmt.Fprintf(c, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", b.Len(), b.Bytes())
	})
	e, _ := cachedEdgeOn(t, fe, 1<<24, func(cfg *Config) { cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}} })
	auth := "Bearer " + e.token(t, "0xa1b2c3d4")
	e.get(t, "/missing", map[string]string{"Authorization": auth, "Accept-Encoding": "gzip"})
	_, body := e.get(t, "/missing", map[string]string{"Authorization": auth, "Accept-Encoding": "identity"})
	if !strings.Contains(body, "Not found") {
		t.Fatalf("a client without gzip got %q", body)
	}
}
