package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/npmclient/npmfixture"
)

func TestCachePurge(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".tgz") {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(npmfixture.Tarball(map[string]string{"index.js": r.URL.Path})) // a whole gzip stream: the cache keeps it
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"name":"left-pad","versions":{}}`)
	}))
	defer upstream.Close()
	t.Setenv("REGEDGE_CACHE_DIR", t.TempDir())
	t.Setenv("UPSTREAM_FALLBACK", upstream.URL)
	a := runningAgent(t)
	for _, p := range []string{"/left-pad", "/left-pad/-/left-pad-1.0.0.tgz", "/left-pad/-/left-pad-1.1.0.tgz"} {
		resp, err := http.Get("http://" + a.ProxyAddr().String() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
	admin := a.AdminAddr().String()
	out, errs, code := run(t, "", "cache", "purge", "left-pad@1.0.0", "--to", admin)
	if code != 0 || !strings.Contains(out, "purged 2 entries") {
		t.Fatalf("version purge: %d %q %s", code, out, errs)
	}
	out, _, code = run(t, "", "cache", "purge", "left-pad", "--to", admin)
	if code != 0 || !strings.Contains(out, "purged 1 entries") {
		t.Fatalf("package purge: %d %q", code, out)
	}
	if p, v := splitPackageVersion("@mycompany/hello@1.2.3"); p != "@mycompany/hello" || v != "1.2.3" {
		t.Fatalf("split %q %q", p, v)
	}
	if p, v := splitPackageVersion("@mycompany/hello"); p != "@mycompany/hello" || v != "" {
		t.Fatalf("split %q %q", p, v)
	}
}
