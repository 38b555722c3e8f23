package userproxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/testutil"
)

// packumentTarballs is the dist.tarball URLs of a packument body.
func packumentTarballs(t *testing.T, body string) []string {
	t.Helper()
	var urls []string
	for _, part := range strings.Split(body, `"tarball":"`)[1:] {
		urls = append(urls, part[:strings.IndexByte(part, '"')])
	}
	if len(urls) == 0 {
		t.Fatalf("no tarball URL in %s", body)
	}
	return urls
}

// TestDefaultPortUpstreamsAreRebased: upstreams on their scheme's default
// port (https on 443, http on 80, as every public registry) write tarball
// URLs without the port; they are rebased onto the edge all the same, and
// the upstream is asked with a Host that has no port.
func TestDefaultPortUpstreamsAreRebased(t *testing.T) {
	onBothFrontEnds(t, testDefaultPortUpstreamsAreRebased)
}

func testDefaultPortUpstreamsAreRebased(t *testing.T, fe frontEnd) {
	for _, tc := range []struct {
		name, addr string
		tls        bool
	}{{"https on 443", "127.0.0.1:443", true}, {"http on 80", "127.0.0.1:80", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", tc.addr)
			if err != nil {
				testutil.SkipOrFail(t, "cannot listen on "+tc.addr+" (needs root or CAP_NET_BIND_SERVICE, and the port free): "+err.Error())
			}
			reg := newRegistry(t, pkg{name: "hello-dep", version: "1.0.0", files: map[string]string{"index.js": "x"}})
			up := httptest.NewUnstartedServer(reg)
			up.Listener.Close()
			up.Listener = ln
			scheme := "http"
			if tc.tls {
				up.StartTLS()
				scheme = "https"
			} else {
				up.Start()
			}
			defer up.Close()
			e := newEdgeOn(t, fe, func(c *Config) {
				c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(scheme + "://" + tc.addr)}}
				if tc.tls {
					c.RootCAs = up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
				}
			})
			auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
			resp, body := e.get(t, "/hello-dep", auth)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			for _, u := range packumentTarballs(t, body) {
				if u != e.URL+"/hello-dep/-/hello-dep-1.0.0.tgz" {
					t.Fatalf("tarball URL %q not rebased onto the edge %s", u, e.URL)
				}
			}
			if resp, tgz := e.get(t, "/hello-dep/-/hello-dep-1.0.0.tgz", auth); resp.StatusCode != 200 || tgz != string(reg.TarballAt("/hello-dep/-/hello-dep-1.0.0.tgz")) {
				t.Fatalf("tarball through the edge: %d", resp.StatusCode)
			}
		})
	}
}

// TestTarballHostsAndPublicURL: URLs on an extra origin of the upstream
// are rebased too, onto proxy.publicURL when it is set (whatever Host the
// client used).
func TestTarballHostsAndPublicURL(t *testing.T) { onBothFrontEnds(t, testTarballHostsAndPublicURL) }

func testTarballHostsAndPublicURL(t *testing.T, fe frontEnd) {
	alias := newRegistry(t) // only its origin matters: the packument names it
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Upstreams[0].TarballHosts = []*url.URL{mustURL("HTTP://" + strings.ToUpper(strings.TrimPrefix(alias.URL, "http://")))}
		c.PublicURL = "https://npm.edge.example/"
	})
	// The fixture writes tarball URLs on the Host it was asked with; ask
	// it for a packument as if it lived on the alias.
	doc := `{"name":"a","versions":{"1.0.0":{"dist":{"tarball":"` + alias.URL + `/a/-/a-1.0.0.tgz"}},"2.0.0":{"dist":{"tarball":"` + e.reg.URL + `/a/-/a-2.0.0.tgz"}},"3.0.0":{"dist":{"tarball":"http://elsewhere.example/a-3.0.0.tgz"}}}}`
	var out strings.Builder
	up := e.proxy.routes[companyHash]
	rb := &rebaser{origins: up.origins, edge: e.proxy.edgeBaseOf(nil, "ignored:1", false)}
	if err := rewriteBody(&out, strings.NewReader(doc), "", rb, nil); err != nil {
		t.Fatal(err)
	}
	got := packumentTarballs(t, out.String())
	want := []string{"https://npm.edge.example/a/-/a-1.0.0.tgz", "https://npm.edge.example/a/-/a-2.0.0.tgz", "http://elsewhere.example/a-3.0.0.tgz"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// Through the edge, with the public URL.
	resp, body := e.get(t, "/@mycompany%2fhello", map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")})
	if resp.StatusCode != 200 || packumentTarballs(t, body)[0] != "https://npm.edge.example/@mycompany/hello/-/hello-1.2.3.tgz" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// TestCachedPacumentPerEdgeBaseAnd304: the stored packument is the rebased
// one, so the edge base is part of the key (two Hosts, two bodies, both
// hits the second time); a matching If-None-Match gets 304 from the cache.
func TestCachedPackumentPerEdgeBaseAnd304(t *testing.T) {
	e, c := cachedEdge(t, 1<<24, nil)
	tok := "Bearer " + e.token(t, "0xa1b2c3d4")
	port := e.URL[strings.LastIndexByte(e.URL, ':'):]
	get := func(host, inm string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.URL+"/@mycompany%2fhello", nil)
		req.Host = host
		req.Header.Set("Authorization", tok)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, err = io.Copy(&b, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b.String()
	}
	for round := 0; round < 2; round++ {
		for _, host := range []string{"localhost" + port, "127.0.0.1" + port} {
			resp, body := get(host, "")
			if u := packumentTarballs(t, body)[0]; u != "http://"+host+"/@mycompany/hello/-/hello-1.2.3.tgz" {
				t.Fatalf("Host %s got %s", host, u)
			}
			want := "miss"
			if round == 1 {
				want = "hit"
			}
			if got := resp.Header.Get("X-Regedge-Cache"); got != want {
				t.Fatalf("round %d Host %s: X-Regedge-Cache %q, want %q", round, host, got, want)
			}
		}
	}
	resp, _ := get("localhost"+port, "")
	etag := resp.Header.Get("Etag")
	if etag == "" {
		t.Fatal("a cache hit without an ETag")
	}
	if resp, body := get("localhost"+port, `"other", `+etag); resp.StatusCode != http.StatusNotModified || body != "" || resp.Header.Get("Etag") != etag {
		t.Fatalf("If-None-Match: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get("localhost"+port, `"other"`); resp.StatusCode != 200 {
		t.Fatalf("a non-matching If-None-Match: %d", resp.StatusCode)
	}
	if n := e.reg.Count(); n != 2 {
		t.Fatalf("the upstream saw %d requests, want 2 (one per edge base)", n)
	}
	if promtest.ToFloat64(c.Hits) != 5 {
		t.Fatalf("cache hits %v, want 5", promtest.ToFloat64(c.Hits))
	}
}
