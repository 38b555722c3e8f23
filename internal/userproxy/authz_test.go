package userproxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/regedge/regedge/internal/token"
)

// tokenFor issues a token with a subject and space-separated scopes.
func (e *edge) tokenFor(t testing.TB, sub, scope string, hashes ...string) string {
	t.Helper()
	c := token.Claims{Scope: scope, RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}
	if len(hashes) == 1 {
		c.RegistryHash = hashes[0]
	} else {
		c.RegistryHashes = hashes
	}
	tok, err := token.Issue(e.key, "", c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// do sends one request through the edge and returns the status and body.
func (e *edge) do(t testing.TB, method, path, body string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, e.URL+path, rd)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestReadTokenNeverWrites: with a token that lacks registry:write, a
// DELETE (unpublish), a dist-tag PUT and a publish are refused 403 with a
// JSON body naming the missing scope, on both front ends, and nothing
// reaches the upstream; with registry:write they go up carrying the
// upstream's credential.
func TestReadTokenNeverWrites(t *testing.T) { onBothFrontEnds(t, testReadTokenNeverWrites) }

func testReadTokenNeverWrites(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, nil)
	read := e.tokenFor(t, "ci", "", "0xa1b2c3d4")
	admin := e.tokenFor(t, "ci", token.ScopeConfigWrite, "0xa1b2c3d4") // another scope is not enough
	write := e.tokenFor(t, "release", "config:write registry:write", "0xa1b2c3d4")
	writes := []struct{ method, path, body string }{
		{http.MethodDelete, "/@mycompany%2fhello/-rev/1-abc", ""},
		{http.MethodPut, "/-/package/hello-dep/dist-tags/latest", `"1.0.0"`},
		{http.MethodPut, "/@mycompany%2fhello", `{"name":"@mycompany/hello"}`},
		{http.MethodPost, "/-/npm/v1/security/../../-/user/org.couchdb.user:x", `{}`}, // not an audit POST
		{http.MethodPatch, "/hello-dep", `{}`},
	}
	for _, tok := range []string{read, admin} {
		for _, w := range writes {
			before := e.reg.Count()
			resp, body := e.do(t, w.method, w.path, w.body, map[string]string{"Authorization": "Bearer " + tok})
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"scope":"registry:write"`) ||
				!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Errorf("%s %s with a read token: %d %s; want 403 naming registry:write", w.method, w.path, resp.StatusCode, body)
			}
			if n := e.reg.Count(); n != before {
				t.Errorf("%s %s with a read token reached the upstream", w.method, w.path)
			}
		}
	}
	// No token at all: 401, not 403 (the token is what is missing).
	if resp, body := e.do(t, http.MethodDelete, "/@mycompany%2fhello/-rev/1-abc", "", nil); resp.StatusCode != 401 || !strings.Contains(body, `"reason":"missing"`) {
		t.Errorf("DELETE without a token: %d %s", resp.StatusCode, body)
	}
	// With registry:write the write goes up with the edge's credential.
	resp, _ := e.do(t, http.MethodPut, "/-/package/hello-dep/dist-tags/latest", `"1.0.0"`, map[string]string{"Authorization": "Bearer " + write})
	path, h := e.reg.Last()
	if resp.StatusCode == http.StatusForbidden || path != "/-/package/hello-dep/dist-tags/latest" || h.Get("Authorization") != "Bearer upstream-secret" {
		t.Errorf("an authorised write: %d, upstream saw %s with Authorization %q", resp.StatusCode, path, h.Get("Authorization"))
	}
	// Reads carry it too, whatever the token's scopes.
	if resp, _ := e.do(t, http.MethodGet, "/hello-dep", "", map[string]string{"Authorization": "Bearer " + read}); resp.StatusCode != 200 {
		t.Errorf("a read with a read token: %d", resp.StatusCode)
	}
	if _, h := e.reg.Last(); h.Get("Authorization") != "Bearer upstream-secret" {
		t.Errorf("a read went up without the edge's credential")
	}
}

// TestAuditPostsAreReads: npm audit's POSTs need no registry:write and go
// up with the edge's credential.
func TestAuditPostsAreReads(t *testing.T) { onBothFrontEnds(t, testAuditPostsAreReads) }

func testAuditPostsAreReads(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, nil)
	read := e.tokenFor(t, "ci", "", "0xa1b2c3d4")
	for _, p := range []string{"/-/npm/v1/security/advisories/bulk", "/-/npm/v1/security/audits/quick"} {
		resp, body := e.do(t, http.MethodPost, p, `{"hello-dep":["1.0.0"]}`, map[string]string{"Authorization": "Bearer " + read, "Content-Type": "application/json"})
		path, h := e.reg.Last()
		if resp.StatusCode == http.StatusForbidden || path != p || h.Get("Authorization") != "Bearer upstream-secret" {
			t.Errorf("POST %s with a read token: %d %s; upstream saw %q", p, resp.StatusCode, body, path)
		}
	}
	for _, p := range []string{"/-/npm/v1/security/", "/-/npm/v1/security/%2e%2e/x", "/-/npm/v1/security/a/../b", "/-/npm/v1/securityx"} {
		if isRead(http.MethodPost, p) {
			t.Errorf("POST %s counted as a read", p)
		}
	}
}

// TestWritesWithoutTokensCarryNoCredential: on an open edge (no
// tokens.publicKeys) writes pass, but never with the upstream's credential
// (the agent refuses that configuration; the proxy never lends it either).
func TestWritesWithoutTokensCarryNoCredential(t *testing.T) {
	onBothFrontEnds(t, testWritesWithoutTokensCarryNoCredential)
}

func testWritesWithoutTokensCarryNoCredential(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, func(c *Config) { c.Tokens = nil })
	e.do(t, http.MethodPut, "/-/package/hello-dep/dist-tags/latest", `"1.0.0"`, nil)
	path, h := e.reg.Last()
	if path != "/-/package/hello-dep/dist-tags/latest" || h.Get("Authorization") != "" {
		t.Errorf("an anonymous write went up as %q with Authorization %q", path, h.Get("Authorization"))
	}
}

// TestAnonymousRead: tokens.anonymousRead lets reads through without a
// token (the upstream still sees the edge's credential); a token that is
// sent is still checked; writes still need registry:write.
func TestAnonymousRead(t *testing.T) { onBothFrontEnds(t, testAnonymousRead) }

func testAnonymousRead(t *testing.T, fe frontEnd) {
	e := newEdgeOn(t, fe, func(c *Config) { c.AnonymousRead = true })
	read := e.tokenFor(t, "ci", "", "0xa1b2c3d4")
	for _, p := range []string{"/hello-dep", "/@mycompany%2fhello", "/hello-dep/-/hello-dep-1.0.0.tgz"} {
		if resp, body := e.do(t, http.MethodGet, p, "", nil); resp.StatusCode != 200 {
			t.Errorf("anonymous GET %s: %d %s", p, resp.StatusCode, body)
		}
		if _, h := e.reg.Last(); h.Get("Authorization") != "Bearer upstream-secret" {
			t.Errorf("anonymous read went up without the edge's credential")
		}
	}
	if resp, body := e.do(t, http.MethodGet, "/hello-dep", "", map[string]string{"Authorization": "Bearer junk"}); resp.StatusCode != 401 || !strings.Contains(body, `"reason":"malformed"`) {
		t.Errorf("a read with a bad token: %d %s", resp.StatusCode, body)
	}
	before := e.reg.Count()
	if resp, body := e.do(t, http.MethodPut, "/hello-dep", `{}`, nil); resp.StatusCode != 401 || !strings.Contains(body, `"reason":"missing"`) {
		t.Errorf("anonymous PUT: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.do(t, http.MethodPut, "/hello-dep", `{}`, map[string]string{"Authorization": "Bearer " + read}); resp.StatusCode != 403 {
		t.Errorf("PUT with a read token: %d", resp.StatusCode)
	}
	if e.reg.Count() != before {
		t.Errorf("a refused write reached the upstream")
	}
}

// TestAuditRoutedToItsUpstream: proxy.audit sends /-/npm/v1/security/* to
// the chosen upstream, whatever the request's own routing.
func TestAuditRoutedToItsUpstream(t *testing.T) { onBothFrontEnds(t, testAuditRoutedToItsUpstream) }

func testAuditRoutedToItsUpstream(t *testing.T, fe frontEnd) {
	auditReg := newRegistry(t)
	audit := uint32(0x00000a0d)
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Upstreams = append(c.Upstreams, Upstream{Hash: audit, URL: mustURL(auditReg.URL), AuthToken: "audit-secret"})
		c.Audit = &audit
	})
	read := e.tokenFor(t, "ci", "", "0xa1b2c3d4")
	before := e.reg.Count()
	e.do(t, http.MethodPost, "/-/npm/v1/security/advisories/bulk", `{}`, map[string]string{"Authorization": "Bearer " + read})
	path, h := auditReg.Last()
	if path != "/-/npm/v1/security/advisories/bulk" || h.Get("Authorization") != "Bearer audit-secret" || e.reg.Count() != before {
		t.Errorf("the audit went to %q (Authorization %q); the request's own upstream saw %d more", path, h.Get("Authorization"), e.reg.Count()-before)
	}
	if _, err := New(Config{Upstreams: e.proxy.cfg.Upstreams[:1], Audit: &audit, Versions: e.proxy.cfg.Versions}, fixedState{}, quiet); err == nil {
		t.Fatal("an audit hash without an upstream was accepted")
	}
}

// TestScopeRuleSeesDecodedNames: /%40scope%2fname is the same package as
// /@scope%2fname, so the scope rule (and its no-fallback guard) applies.
func TestScopeRuleSeesDecodedNames(t *testing.T) { onBothFrontEnds(t, testScopeRuleSeesDecodedNames) }

func testScopeRuleSeesDecodedNames(t *testing.T, fe frontEnd) {
	fallback := newRegistry(t, pkg{name: "@evil/thing", version: "9.9.9"})
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Scopes["@evil"] = otherHash // a scope with no upstream of its own
		c.Upstreams = append(c.Upstreams, Upstream{Hash: 0, URL: mustURL(fallback.URL)})
	})
	tok := e.token(t, "0xa1b2c3d4", "0x0000beef", "0x00000000")
	for _, p := range []string{"/%40evil%2fthing", "/%40EVIL%2Fthing", "/%40evil/thing", "/@evil%2fthing"} {
		resp, body := e.do(t, http.MethodGet, p, "", map[string]string{"Authorization": "Bearer " + tok})
		if resp.StatusCode != 502 || fallback.Count() != 0 {
			t.Errorf("GET %s: %d %s, fallback saw %d; want 502 from the scope rule", p, resp.StatusCode, body, fallback.Count())
		}
	}
	for in, want := range map[string]string{"/@a%2fb": "@a", "/%40A%2fb": "@a", "/%40a/b/-/b-1.tgz": "@a", "/a": "", "/@a": "", "/%40a": "", "/@": ""} {
		if got := scopeOf(in); got != want {
			t.Errorf("scopeOf(%q) = %q, want %q", in, got, want)
		}
	}
}
