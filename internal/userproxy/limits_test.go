package userproxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// TestPerClientRateLimit: one client over its per-client limit gets 429
// naming the rule, with Retry-After, while another client (another token
// sub) still gets 200, on both front ends.
func TestPerClientRateLimit(t *testing.T) { onBothFrontEnds(t, testPerClientRateLimit) }

func testPerClientRateLimit(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, func(c *Config) { c.PerMinute, c.PerClientPerMinute = 1000, 3 })
	busy := map[string]string{"Authorization": "Bearer " + e.tokenFor(t, "ci-large", "", "0xa1b2c3d4")}
	calm := map[string]string{"Authorization": "Bearer " + e.tokenFor(t, "laptop", "", "0xa1b2c3d4")}
	for i := 0; i < 3; i++ {
		if resp, body := e.do(t, http.MethodGet, "/hello-dep", "", busy); resp.StatusCode != 200 {
			t.Fatalf("request %d of the busy client: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := e.do(t, http.MethodGet, "/hello-dep", "", busy)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(body, `"rule":"3 per minute per client (sub ci-large)"`) || !strings.Contains(body, `"reason":"client"`) {
		t.Fatalf("the busy client over its limit: %d %s (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if resp, body := e.do(t, http.MethodGet, "/hello-dep", "", calm); resp.StatusCode != 200 {
		t.Fatalf("another client while the first is limited: %d %s", resp.StatusCode, body)
	}
}

// TestPerClientRateLimitBySourceAddress: without a token sub the source
// address is the client (here as forwarded by a trusted proxy); the
// registry hash's bucket stays a ceiling, and requests a client was refused
// do not use it up.
func TestPerClientRateLimitBySourceAddress(t *testing.T) {
	e := newEdge(t, func(c *Config) {
		c.Tokens = nil
		c.PerMinute, c.PerClientPerMinute = 5, 3
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	a := map[string]string{"X-Forwarded-For": "203.0.113.7, 127.0.0.1"}
	b := map[string]string{"X-Forwarded-For": "198.51.100.9"}
	for i := 0; i < 3; i++ {
		if resp, _ := e.do(t, http.MethodGet, "/hello-dep", "", a); resp.StatusCode != 200 {
			t.Fatalf("client a, request %d: %d", i, resp.StatusCode)
		}
	}
	for i := 0; i < 3; i++ { // refused by a's own bucket: the hash's is untouched
		if resp, body := e.do(t, http.MethodGet, "/hello-dep", "", a); resp.StatusCode != 429 || !strings.Contains(body, "per client (source 203.0.113.7)") {
			t.Fatalf("client a over its limit: %d %s", resp.StatusCode, body)
		}
	}
	for i := 0; i < 2; i++ {
		if resp, body := e.do(t, http.MethodGet, "/hello-dep", "", b); resp.StatusCode != 200 {
			t.Fatalf("client b, request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := e.do(t, http.MethodGet, "/hello-dep", "", b)
	if resp.StatusCode != 429 || !strings.Contains(body, `"rule":"5 per minute per registry hash"`) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the registry hash's ceiling: %d %s", resp.StatusCode, body)
	}
}

// TestClientBucketsAreBounded: buckets for new clients past the bound go
// to one shared overflow bucket until full (idle) buckets can be dropped.
func TestClientBucketsAreBounded(t *testing.T) {
	c := newClientLimits(1)
	c.max = 3
	for _, k := range []string{"a", "b", "c"} {
		if _, _, ok := c.reserve(k); !ok {
			t.Fatalf("first request of %s refused", k)
		}
	}
	if _, _, ok := c.reserve("d"); !ok { // the overflow bucket's first token
		t.Fatal("the first client past the bound was refused")
	}
	if _, _, ok := c.reserve("e"); ok {
		t.Fatal("a second client past the bound got its own bucket")
	}
	if len(c.m) > c.max+1 {
		t.Fatalf("%d buckets, bound %d (+ overflow)", len(c.m), c.max)
	}
}
