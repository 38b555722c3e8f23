//go:build linux

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The origin is a registry as the proxies see one: packuments as
// application/json with tarball URLs on itself, tarballs as
// application/octet-stream, ETag and Last-Modified on both, 304 for a
// matching If-None-Match (or, without one, an If-Modified-Since not older
// than the resource), gzip for packuments when the request accepts it, and
// the npm registry's Cache-Control. It runs in its own process so that its
// CPU is never counted as a proxy's.

// originStats counts what the origin answered; the tool reads them to tell
// a cached target from one that went to the origin.
type originStats struct {
	Requests    int64 `json:"requests"`
	Packuments  int64 `json:"packuments"`
	Tarballs    int64 `json:"tarballs"`
	NotModified int64 `json:"notModified"`
	Gzip        int64 `json:"gzip"`
}

// statsPath is answered by the origin only (the proxies are never asked
// for it).
const statsPath = "/_bench/stats"

type origin struct {
	fx    *fixtures
	stats struct {
		requests, packuments, tarballs, notModified, gzip atomic.Int64
	}
	// Precomputed per resource, so that serving costs the origin as little
	// as possible.
	docs map[string]*served // by path
}

type served struct {
	body, gz        []byte
	etag, gzETag    string
	lastModified    string
	modified        time.Time
	contentType     string
	cacheControl    string
	plainLen, gzLen string
	compressible    bool // packuments: gzip when asked
	packument       bool
}

func etagOf(b []byte, suffix string) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + suffix + `"`
}

// serveOrigin is the "origin" subcommand: it serves the fixtures on the
// listener passed as file descriptor 3, the base being the URL it is
// reached at.
func serveOrigin(base string) error {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	fx, err := buildFixtures(base)
	if err != nil {
		return err
	}
	o := newOrigin(fx)
	srv := &http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	return srv.Serve(ln)
}

// newOrigin precomputes every answer of the fixtures.
func newOrigin(fx *fixtures) *origin {
	o := &origin{fx: fx, docs: map[string]*served{}}
	for name, p := range fx.pkgs {
		o.docs["/"+name] = &served{
			body: p.body, gz: p.gz, etag: etagOf(p.body, ""), gzETag: etagOf(p.body, "-gz"),
			modified: p.modified, lastModified: p.modified.Format(http.TimeFormat),
			contentType: "application/json", cacheControl: "public, max-age=300",
			plainLen: strconv.Itoa(len(p.body)), gzLen: strconv.Itoa(len(p.gz)),
			compressible: true, packument: true,
		}
		for v, t := range p.tarballs {
			o.docs[tarballPath(name, v)] = &served{
				body: t.body, etag: `"` + t.shasum + `"`,
				modified: t.published, lastModified: t.published.Format(http.TimeFormat),
				contentType: "application/octet-stream", cacheControl: "public, immutable, max-age=31557600",
				plainLen: strconv.Itoa(len(t.body)),
			}
		}
	}
	return o
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == statsPath {
		s := originStats{Requests: o.stats.requests.Load(), Packuments: o.stats.packuments.Load(),
			Tarballs: o.stats.tarballs.Load(), NotModified: o.stats.notModified.Load(), Gzip: o.stats.gzip.Load()}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s) // to a client that may have gone
		return
	}
	o.stats.requests.Add(1)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, `{"error":"method not allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	d := o.docs[r.URL.Path]
	if d == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":"Not found"}`)
		return
	}
	h := w.Header()
	useGzip := d.compressible && acceptsGzip(r.Header.Get("Accept-Encoding"))
	body, etag, length := d.body, d.etag, d.plainLen
	if useGzip {
		body, etag, length = d.gz, d.gzETag, d.gzLen
		h["Content-Encoding"] = []string{"gzip"}
	}
	if d.compressible {
		h["Vary"] = []string{"Accept-Encoding"}
	}
	h["Etag"] = []string{etag}
	h["Last-Modified"] = []string{d.lastModified}
	h["Cache-Control"] = []string{d.cacheControl}
	if notModified(r, d, etag) {
		o.stats.notModified.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h["Content-Type"] = []string{d.contentType}
	h["Content-Length"] = []string{length}
	if d.packument {
		o.stats.packuments.Add(1)
	} else {
		o.stats.tarballs.Add(1)
	}
	if useGzip {
		o.stats.gzip.Add(1)
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

// notModified: If-None-Match when present (weak comparison, as RFC 9110
// says for GET), else If-Modified-Since.
func notModified(r *http.Request, d *served, etag string) bool {
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		for _, t := range strings.Split(inm, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
			if t == "*" || t == etag {
				return true
			}
		}
		return false
	}
	if ims := r.Header.Get("If-Modified-Since"); ims != "" {
		if t, err := http.ParseTime(ims); err == nil {
			return !d.modified.Truncate(time.Second).After(t)
		}
	}
	return false
}

// acceptsGzip: gzip (or *) listed without q=0.
func acceptsGzip(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "*" {
			continue
		}
		q := strings.ReplaceAll(strings.ToLower(params), " ", "")
		if strings.HasPrefix(q, "q=0") && strings.Trim(strings.TrimPrefix(q, "q=0"), ".0") == "" {
			continue
		}
		return true
	}
	return false
}
