package userproxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/npmclient/npmfixture"
)

// BenchmarkPackumentRevalidation: what a short packumentTTL costs the
// edge. One packument of a package with 300 versions (102 KB, the
// fixture's shape: tarball URLs to rebase), asked for as npm install asks,
// served three ways in the same run: fresh from the cache (hit, the
// baseline), revalidated with the upstream (the entry marked stale before
// each request: a conditional request answered 304, then the cached file;
// what an expired TTL or a fleet hint costs when nothing changed), and
// refetched whole (the entry dropped before each request: a 200 streamed,
// rebased, checked and stored; what a change costs). The upstream serves
// one precomputed body and answers a matching If-None-Match with 304 at
// once, as a registry answering from its own cache does: the edge's cost
// is measured, not the fixture's.
//
//	go test ./internal/userproxy -run '^$' -bench BenchmarkPackumentRevalidation -count 6
func BenchmarkPackumentRevalidation(b *testing.B) {
	for _, mode := range []string{"hit", "revalidate-304", "refetch-200"} {
		b.Run(mode, func(b *testing.B) {
			reg := npmfixture.New(b)
			for i := 0; i < 300; i++ {
				reg.Add(npmfixture.Package{Name: "many-versions", Version: fmt.Sprintf("1.%d.0", i),
					Deps: map[string]string{"hello-dep": "^1.0.0"}, Files: map[string]string{"index.js": "x"}})
			}
			resp, err := http.Get(reg.URL + "/many-versions")
			if err != nil {
				b.Fatal(err)
			}
			doc, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			etag := resp.Header.Get("Etag")
			var asked atomic.Int64
			upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked.Add(1)
				w.Header().Set("Etag", etag)
				if r.Header.Get("If-None-Match") == etag {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Write(doc)
			}))
			defer upstream.Close()
			c, _ := edgecache.Open(b.TempDir(), 1<<30, edgecache.Options{})
			e := newEdge(b, func(cfg *Config) {
				cfg.Tokens, cfg.PerMinute = nil, 1<<30
				cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(upstream.URL)}}
				cfg.Cache, cfg.PackumentTTL, cfg.NegativeTTL, cfg.StaleIfError = c, time.Hour, time.Minute, time.Hour
			})
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			var size int64
			get := func() {
				req, _ := http.NewRequest(http.MethodGet, e.URL+"/many-versions", nil)
				req.Header.Set("Accept", "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%d", resp.StatusCode)
				}
				size = n
			}
			get() // fill
			keys := PackumentKeysOf([]string{"many-versions"})
			upstream0 := asked.Load()
			b.ReportAllocs()
			cpu0 := processCPU()
			b.ResetTimer()
			for b.Loop() {
				switch mode {
				case "revalidate-304":
					c.MarkStale(keys)
				case "refetch-200":
					c.PurgeKeys(keys)
				}
				get()
			}
			b.StopTimer()
			// The whole process: client, edge and upstream.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N)/1e3, "cpu-us/op")
			b.ReportMetric(float64(size), "body-bytes")
			b.ReportMetric(float64(asked.Load()-upstream0)/float64(b.N), "upstream-req/op")
		})
	}
}

// processCPU is the CPU time (user and system) this process used, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
