package userproxy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// registry is a fixture upstream npm registry: packuments whose tarball
// URLs point at itself, tarballs with real sha512 integrity, one package
// depending on another. It records the headers of every request it gets.
type registry struct {
	*httptest.Server
	mu       sync.Mutex
	seen     []http.Header
	paths    []string
	tarballs map[string][]byte // path -> bytes
	docs     map[string]func(base string) map[string]any
}

type pkg struct {
	name, version string
	deps          map[string]string
	files         map[string]string
}

func tarball(t testing.TB, p pkg) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	manifest, _ := json.Marshal(map[string]any{"name": p.name, "version": p.version, "main": "index.js", "dependencies": p.deps})
	files := map[string]string{"package.json": string(manifest)}
	for k, v := range p.files {
		files[k] = v
	}
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: "package/" + name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func newRegistry(t testing.TB, pkgs ...pkg) *registry {
	t.Helper()
	reg := &registry{tarballs: map[string][]byte{}, docs: map[string]func(string) map[string]any{}}
	for _, p := range pkgs {
		tgz := tarball(t, p)
		short := p.name[strings.LastIndex(p.name, "/")+1:]
		tpath := "/" + p.name + "/-/" + short + "-" + p.version + ".tgz"
		reg.tarballs[tpath] = tgz
		sum512 := sha512.Sum512(tgz)
		sum1 := sha1.Sum(tgz)
		p := p
		reg.docs[p.name] = func(base string) map[string]any {
			return map[string]any{
				"name":      p.name,
				"dist-tags": map[string]string{"latest": p.version},
				"versions": map[string]any{p.version: map[string]any{
					"name": p.name, "version": p.version, "dependencies": p.deps,
					"dist": map[string]any{
						"tarball":   base + tpath,
						"integrity": "sha512-" + base64.StdEncoding.EncodeToString(sum512[:]),
						"shasum":    hex.EncodeToString(sum1[:]),
					},
				}},
			}
		}
	}
	reg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reg.mu.Lock()
		reg.seen = append(reg.seen, r.Header.Clone())
		reg.paths = append(reg.paths, r.URL.EscapedPath())
		reg.mu.Unlock()
		if tgz, ok := reg.tarballs[r.URL.Path]; ok {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(tgz)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/") // decoded: @scope/name
		if doc, ok := reg.docs[name]; ok {
			body, _ := json.Marshal(doc("http://" + r.Host))
			etag := fmt.Sprintf(`"%x"`, sha1.Sum(body))
			w.Header().Set("Etag", etag)
			if r.Header.Get("If-None-Match") == etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"Not found"}`))
	}))
	t.Cleanup(reg.Close)
	return reg
}

func (reg *registry) last() (string, http.Header) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if len(reg.seen) == 0 {
		return "", nil
	}
	return reg.paths[len(reg.paths)-1], reg.seen[len(reg.seen)-1]
}

func (reg *registry) count() int {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return len(reg.seen)
}
