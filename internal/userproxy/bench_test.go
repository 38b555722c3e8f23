package userproxy

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

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
