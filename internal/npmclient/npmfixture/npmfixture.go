// Package npmfixture is a small npm registry for tests: real HTTP on
// loopback serving packuments (with ETags, answering If-None-Match with
// 304) and tarballs built from file maps, taking publishes, and recording
// the path and headers of every request it saw.
package npmfixture

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/Masterminds/semver/v3"
)

// Package is one version to serve.
type Package struct {
	Name, Version string
	Deps          map[string]string
	Optional      map[string]string // optionalDependencies
	Files         map[string]string // path inside package/ -> contents; package.json is made when missing
	Tarball       []byte            // when set, served instead of one built from Files
	SHA1Only      bool              // publish only dist.shasum, as old registries do
	BadIntegrity  bool              // advertise an integrity that does not match
	NoTarball     bool              // list the version but answer 404 for its tarball
	TarballBase   string            // when set, dist.tarball points there (another server) instead of here
	// Extra fields of the version's entry in the packument (os, cpu,
	// bundleDependencies, ...), as a registry would send them.
	Extra map[string]any
}

// Registry serves the packages added to it.
type Registry struct {
	*httptest.Server
	mu       sync.Mutex
	tags     map[string]map[string]string
	pkgs     map[string][]*Package
	tarballs map[string][]byte
	paths    []string // escaped, as requested
	Seen     []http.Header
	// RequireToken, when set, answers 401 to every request without
	// "Authorization: Bearer RequireToken".
	RequireToken string
	// RedirectTarballs, when set, answers every tarball request with a
	// redirect to the same path under this base URL.
	RedirectTarballs string
}

// New starts a registry closed at the end of the test.
func New(t testing.TB) *Registry {
	r := &Registry{pkgs: map[string][]*Package{}, tarballs: map[string][]byte{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

// SetDistTag points a dist-tag of a package at a version (by default
// "latest" is the highest version).
func (r *Registry) SetDistTag(name, tag, version string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tags == nil {
		r.tags = map[string]map[string]string{}
	}
	if r.tags[name] == nil {
		r.tags[name] = map[string]string{}
	}
	r.tags[name][tag] = version
}

// Add makes p available.
func (r *Registry) Add(p Package) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.Tarball == nil {
		files := p.Files
		if _, ok := files["package.json"]; !ok {
			m := map[string]any{"name": p.Name, "version": p.Version, "main": "index.js", "dependencies": p.Deps}
			if p.Optional != nil {
				m["optionalDependencies"] = p.Optional
			}
			manifest, _ := json.Marshal(m)
			files = map[string]string{"package.json": string(manifest)}
			for k, v := range p.Files {
				files[k] = v
			}
		}
		p.Tarball = Tarball(files)
	}
	r.pkgs[p.Name] = append(r.pkgs[p.Name], &p)
	if !p.NoTarball {
		r.tarballs[tarballPath(p.Name, p.Version)] = p.Tarball
	}
}

func tarballPath(name, version string) string {
	base := name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		base = name[i+1:]
	}
	return "/" + name + "/-/" + base + "-" + version + ".tgz"
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Seen = append(r.Seen, req.Header.Clone())
	r.paths = append(r.paths, req.URL.EscapedPath())
	if r.RequireToken != "" && req.Header.Get("Authorization") != "Bearer "+r.RequireToken {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"authentication required"}`))
		return
	}
	if req.Method == http.MethodPut {
		r.publish(w, req)
		return
	}
	if r.RedirectTarballs != "" && strings.Contains(req.URL.Path, "/-/") {
		http.Redirect(w, req, r.RedirectTarballs+req.URL.Path, http.StatusFound)
		return
	}
	if tgz, ok := r.tarballs[req.URL.Path]; ok {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(tgz)
		return
	}
	name := strings.TrimPrefix(req.URL.Path, "/")
	versions, ok := r.pkgs[name]
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"Not found"}`))
		return
	}
	doc := map[string]any{"name": name}
	vs := map[string]any{}
	var latest []string
	for _, p := range versions {
		sum1 := sha1.Sum(p.Tarball)
		sum512 := sha512.Sum512(p.Tarball)
		base := scheme(req) + "://" + req.Host
		if p.TarballBase != "" {
			base = p.TarballBase
		}
		dist := map[string]any{
			"tarball": base + tarballPath(p.Name, p.Version),
			"shasum":  hex.EncodeToString(sum1[:]),
		}
		if !p.SHA1Only {
			dist["integrity"] = "sha512-" + base64.StdEncoding.EncodeToString(sum512[:])
		}
		if p.BadIntegrity {
			dist["integrity"] = "sha512-" + base64.StdEncoding.EncodeToString(make([]byte, 64))
		}
		entry := map[string]any{"name": p.Name, "version": p.Version, "dependencies": p.Deps, "dist": dist}
		if p.Optional != nil {
			entry["optionalDependencies"] = p.Optional
		}
		for k, v := range p.Extra {
			entry[k] = v
		}
		vs[p.Version] = entry
		latest = append(latest, p.Version)
	}
	sort.Slice(latest, func(i, j int) bool {
		a, aerr := semver.NewVersion(latest[i])
		b, berr := semver.NewVersion(latest[j])
		if aerr != nil || berr != nil {
			return latest[i] < latest[j]
		}
		return a.LessThan(b)
	})
	doc["versions"] = vs
	tags := map[string]string{"latest": latest[len(latest)-1]}
	for k, v := range r.tags[name] {
		tags[k] = v
	}
	doc["dist-tags"] = tags
	body, _ := json.Marshal(doc)
	sum := sha1.Sum(body)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	w.Header().Set("Etag", etag)
	if req.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// Last is the path and headers of the latest request ("" and nil before
// any).
func (r *Registry) Last() (string, http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.paths) == 0 {
		return "", nil
	}
	return r.paths[len(r.paths)-1], r.Seen[len(r.Seen)-1]
}

// Count is the number of requests seen.
func (r *Registry) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.paths)
}

// Requests is a copy of every request's path and headers, in order.
func (r *Registry) Requests() (paths []string, headers []http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...), append([]http.Header(nil), r.Seen...)
}

// TarballAt is the tarball served at path (as /name/-/base-version.tgz).
func (r *Registry) TarballAt(path string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tarballs[path]
}

// Entry is one raw tar entry, for building hostile tarballs.
type Entry struct {
	Name     string
	Type     byte
	Body     string
	Linkname string
	Mode     int64
}

// Tarball builds an npm-shaped tarball (package/ prefix) from a file map.
func Tarball(files map[string]string) []byte {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	entries := make([]Entry, 0, len(names))
	for _, n := range names {
		entries = append(entries, Entry{Name: "package/" + n, Type: tar.TypeReg, Body: files[n]})
	}
	return RawTarball(entries)
}

// RawTarball builds a gzip tarball of exactly these entries. It panics
// when archive/tar refuses an entry: a fixture that silently dropped one
// would let a test pass for the wrong reason.
func RawTarball(entries []Entry) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		size := int64(len(e.Body))
		if e.Type != tar.TypeReg {
			size = 0
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
		}
		err := tw.WriteHeader(&tar.Header{Name: e.Name, Typeflag: e.Type, Size: size, Linkname: e.Linkname, Mode: mode, Format: tar.FormatPAX})
		if err == nil && e.Type == tar.TypeReg {
			_, err = tw.Write([]byte(e.Body))
		}
		if err != nil {
			panic(fmt.Sprintf("npmfixture: tarball entry %q: %v", e.Name, err))
		}
	}
	if err := errors.Join(tw.Close(), gz.Close()); err != nil {
		panic(fmt.Sprintf("npmfixture: tarball: %v", err))
	}
	return buf.Bytes()
}

// publish takes an npm publish document, checks that the attachment
// matches the integrity and shasum it claims, and serves the version.
func (r *Registry) publish(w http.ResponseWriter, req *http.Request) {
	var doc struct {
		Name     string `json:"name"`
		Versions map[string]struct {
			Name         string            `json:"name"`
			Version      string            `json:"version"`
			Dependencies map[string]string `json:"dependencies"`
			Dist         struct {
				Integrity string `json:"integrity"`
				Shasum    string `json:"shasum"`
			} `json:"dist"`
		} `json:"versions"`
		Attachments map[string]struct {
			Data   string `json:"data"`
			Length int    `json:"length"`
		} `json:"_attachments"`
	}
	if err := json.NewDecoder(req.Body).Decode(&doc); err != nil {
		http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
		return
	}
	if len(doc.Versions) != 1 || len(doc.Attachments) != 1 || "/"+doc.Name != req.URL.Path {
		http.Error(w, `{"error":"want one version, one attachment, name matching the path"}`, http.StatusBadRequest)
		return
	}
	for _, v := range doc.Versions {
		for _, a := range doc.Attachments {
			tgz, err := base64.StdEncoding.DecodeString(a.Data)
			sum1, sum512 := sha1.Sum(tgz), sha512.Sum512(tgz)
			if err != nil || len(tgz) != a.Length || v.Dist.Shasum != hex.EncodeToString(sum1[:]) ||
				v.Dist.Integrity != "sha512-"+base64.StdEncoding.EncodeToString(sum512[:]) {
				http.Error(w, `{"error":"attachment does not match its length, shasum or integrity"}`, http.StatusBadRequest)
				return
			}
			for _, have := range r.pkgs[doc.Name] {
				if have.Version == v.Version {
					http.Error(w, `{"error":"cannot publish over the previously published version"}`, http.StatusConflict)
					return
				}
			}
			p := &Package{Name: doc.Name, Version: v.Version, Deps: v.Dependencies, Tarball: tgz}
			r.pkgs[p.Name] = append(r.pkgs[p.Name], p)
			r.tarballs[tarballPath(p.Name, p.Version)] = tgz
		}
	}
	w.WriteHeader(http.StatusCreated)
	w.Write([]byte(`{"ok":true}`))
}

// scheme is the request's scheme, for the URLs the registry gives out.
func scheme(req *http.Request) string {
	if req.TLS != nil {
		return "https"
	}
	return "http"
}

// ServeHTTP serves the registry, for tests that listen themselves (on a
// given address, or with TLS).
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.serve(w, req) }
