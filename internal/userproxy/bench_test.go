package userproxy

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/token"
)

var sinkResult string

// BenchmarkToken compares a cold Ed25519 verification with a hit in the
// verified-token cache, for the same token, in the same run.
//
//	go test ./internal/userproxy -run '^$' -bench BenchmarkToken -count 6
func BenchmarkToken(b *testing.B) {
	e := newEdge(b, nil)
	tok, _ := token.Issue(e.key, "edge", token.Claims{RegistryHash: "0xa1b2c3d4", RegisteredClaims: jwt.RegisteredClaims{
		Subject: "@mycompany", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}})
	b.Run("cold-verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.proxy.tokens = newTokenCache(10000) // empty: every check verifies
			sinkResult = e.proxy.checkToken(tok, companyHash)
		}
	})
	b.Run("cache-hit", func(b *testing.B) {
		e.proxy.checkToken(tok, companyHash)
		b.ReportAllocs()
		for b.Loop() {
			sinkResult = e.proxy.checkToken(tok, companyHash)
		}
		if sinkResult != "cached" {
			b.Fatalf("result %s", sinkResult)
		}
	})
}

// BenchmarkTarball serves one tarball through the edge, from the edge cache
// and fetched through the upstream (no cache), in the same run.
//
//	go test ./internal/userproxy -run '^$' -bench BenchmarkTarball -count 6
func BenchmarkTarball(b *testing.B) {
	for _, cached := range []bool{true, false} {
		name := "upstream"
		if cached {
			name = "cache"
		}
		b.Run(name, func(b *testing.B) {
			c, _ := edgecache.Open(b.TempDir(), 1<<24)
			e := newEdge(b, func(cfg *Config) {
				cfg.Tokens = nil
				cfg.PerMinute = 1 << 30
				if cached {
					cfg.Cache, cfg.PackumentTTL = c, time.Hour
				}
			})
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			get := func() {
				resp, err := client.Get(e.URL + tarballPath)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			get() // fill the cache
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get()
				}
			})
		})
	}
}
