//go:build linux

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// The small packages only: the large ones take seconds to build and are
// checked against the origin by every run of the tool.
func smallSpecs() []pkgSpec { return specs[:2] }

func TestFixturesAreDeterministicAndTrue(t *testing.T) {
	const base = "http://127.0.0.1:4321/"
	zw, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression)
	for _, s := range smallSpecs() {
		a, err := buildPackage(s, base, zw)
		if err != nil {
			t.Fatal(err)
		}
		b, err := buildPackage(s, base, zw)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.body, b.body) || !bytes.Equal(a.tarballs["1.0.0"].body, b.tarballs["1.0.0"].body) {
			t.Fatalf("%s: two builds differ", s.name)
		}
		if d := len(a.body) - s.packument; d > 512 || d < -512 {
			t.Errorf("%s: packument is %d bytes, want about %d", s.name, len(a.body), s.packument)
		}
		var doc struct {
			Versions map[string]struct {
				Version string `json:"version"`
				Dist    struct{ Tarball, Integrity, Shasum string }
			}
			Time        map[string]string
			Maintainers []person
			Readme      string
		}
		if err := json.Unmarshal(a.body, &doc); err != nil {
			t.Fatal(err)
		}
		if len(doc.Versions) != s.versions || len(doc.Time) != s.versions+2 || len(doc.Maintainers) == 0 || doc.Readme == "" {
			t.Fatalf("%s: %d versions, %d times, %d maintainers", s.name, len(doc.Versions), len(doc.Time), len(doc.Maintainers))
		}
		for v, m := range doc.Versions {
			tb := a.tarballs[v].body
			sum := sha512.Sum512(tb)
			sum1 := sha1.Sum(tb)
			if m.Dist.Integrity != "sha512-"+base64.StdEncoding.EncodeToString(sum[:]) || m.Dist.Shasum != hex.EncodeToString(sum1[:]) {
				t.Fatalf("%s@%s: integrity or shasum is not of the tarball", s.name, v)
			}
			if m.Dist.Tarball != "http://127.0.0.1:4321"+tarballPath(s.name, v) {
				t.Fatalf("%s@%s: tarball %s", s.name, v, m.Dist.Tarball)
			}
			if d := len(tb) - s.tarball; d > 64 || d < -64 {
				t.Errorf("%s@%s: tarball is %d bytes, want about %d", s.name, v, len(tb), s.tarball)
			}
			checkTarball(t, tb, s.name, m.Version)
		}
		plain, err := gunzip(a.gz)
		if err != nil || !bytes.Equal(plain, a.body) {
			t.Fatalf("%s: gzip variant is not the packument", s.name)
		}
	}
}

// checkTarball: a gzip'd tar with package/package.json naming the version.
func checkTarball(t *testing.T, tgz []byte, name, version string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s@%s: no package/package.json (%v)", name, version, err)
		}
		if h.Name != "package/package.json" {
			continue
		}
		var pj struct{ Name, Version string }
		if err := json.NewDecoder(tr).Decode(&pj); err != nil || pj.Name != name || pj.Version != version {
			t.Fatalf("package.json: %+v, %v", pj, err)
		}
		return
	}
}

func TestOriginRevalidatesAndCompresses(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String() + "/"
	zw, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression)
	p, err := buildPackage(specs[0], base, zw)
	if err != nil {
		t.Fatal(err)
	}
	o := newOrigin(&fixtures{originBase: base, pkgs: map[string]*packument{p.name: p}})
	srv.Config.Handler = o
	srv.Start()
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	get := func(path string, h ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get("/bench-small")
	if resp.StatusCode != 200 || !bytes.Equal(body, p.body) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("packument: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	etag, lm := resp.Header.Get("Etag"), resp.Header.Get("Last-Modified")
	if etag == "" || lm == "" {
		t.Fatal("no ETag or Last-Modified")
	}
	if resp, _ := get("/bench-small", "If-None-Match", etag); resp.StatusCode != 304 {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}
	if resp, _ := get("/bench-small", "If-None-Match", `"other"`); resp.StatusCode != 200 {
		t.Fatalf("other If-None-Match: %d", resp.StatusCode)
	}
	if resp, _ := get("/bench-small", "If-Modified-Since", lm); resp.StatusCode != 304 {
		t.Fatalf("If-Modified-Since: %d", resp.StatusCode)
	}
	resp, body = get("/bench-small", "Accept-Encoding", "gzip, deflate, br")
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Etag") == etag {
		t.Fatalf("gzip: %q, etag %q", resp.Header.Get("Content-Encoding"), resp.Header.Get("Etag"))
	}
	if plain, err := gunzip(body); err != nil || !bytes.Equal(plain, p.body) {
		t.Fatal("gzip body is not the packument")
	}
	if resp, _ := get("/bench-small", "Accept-Encoding", "gzip;q=0"); resp.Header.Get("Content-Encoding") != "" {
		t.Fatal("gzip;q=0 answered with gzip")
	}
	resp, body = get(tarballPath("bench-small", "1.0.3"), "Accept-Encoding", "gzip")
	if resp.StatusCode != 200 || !bytes.Equal(body, p.tarballs["1.0.3"].body) || resp.Header.Get("Content-Encoding") != "" ||
		resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Fatalf("tarball: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := get(tarballPath("bench-small", "1.0.3"), "If-None-Match", resp.Header.Get("Etag")); resp.StatusCode != 304 {
		t.Fatalf("tarball If-None-Match: %d", resp.StatusCode)
	}
	if resp, _ := get("/nope"); resp.StatusCode != 404 {
		t.Fatalf("unknown: %d", resp.StatusCode)
	}
	if n := o.stats.notModified.Load(); n != 3 {
		t.Fatalf("notModified = %d, want 3", n)
	}
}

func TestCheckRewrittenRefusesAnUnrewrittenPackument(t *testing.T) {
	const origin, edge = "http://127.0.0.1:4321/", "http://127.0.0.1:9999"
	zw, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression)
	p, err := buildPackage(specs[0], origin, zw)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkRewritten(p.body, p, edge); err == nil {
		t.Fatal("the origin's own packument passed as rewritten")
	}
	good := bytes.ReplaceAll(p.body, []byte(origin), []byte(edge+"/"))
	if err := checkRewritten(good, p, edge); err != nil {
		t.Fatal(err)
	}
	// Re-encoded JSON (keys sorted) with the right URLs is accepted.
	var m map[string]any
	json.Unmarshal(good, &m)
	reenc, _ := json.Marshal(m)
	if err := checkRewritten(reenc, p, edge); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), p.tarballs["1.0.2"].integrity, "sha512-AAAA", 1)
	if err := checkRewritten([]byte(bad), p, edge); err == nil {
		t.Fatal("a changed integrity passed")
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 1s test @ http://127.0.0.1:18777/nope
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.58ms    3.55ms  27.69ms   92.04%
    Req/Sec     1.09k   235.84     1.40k    50.00%
  Latency Distribution
     50%  850.00us
     75%    2.85ms
     90%    5.42ms
     99%    1.20s 
  1101 requests in 1.01s, 559.10KB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 1101
Requests/sec:   1087.46
Transfer/sec:    552.23KB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.requests != 1101 || r.rps != 1087.46 || r.p50 != 0.85 || r.p99 != 1200 || r.non2xx != 1101 ||
		r.sockErrs != "Socket errors: connect 0, read 3, write 0, timeout 7" {
		t.Fatalf("%+v", r)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); err == nil {
		t.Fatal("no error without a report")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatal(m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatal(m)
	}
}
