package userproxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"hash"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regedge/regedge/internal/edgecache"
)

// The edge cache on the fast path. Entries are stored as they are served:
// packuments already rebased onto the edge's base (which is part of the
// key) with a gzip variant, tarballs as fetched. A hit is a head and the
// file sent by the kernel; a miss streams from the upstream to the client
// and into the cache at once, and is committed only when the body is
// provably whole (framing, JSON, integrity). Concurrent misses of a key
// make one upstream request (singleflight); the others are served from
// what it stored.

// cacheKind says what a GET path is, for the cache.
type cacheKind int

const (
	bypass        cacheKind = iota // per-user or live: never cached
	kindTarball                    // immutable once a 200
	kindPackument                  // rebased, fresh for PackumentTTL
	kindDistTags                   // /-/package/NAME/dist-tags, fresh for PackumentTTL
)

func isTarball(path string) bool {
	return strings.Contains(path, "/-/") && strings.HasSuffix(path, ".tgz")
}

// classify: tarballs, packuments and dist-tags are cached; everything else
// under /-/ (whoami, ping, search, audit, tokens, users) is per-user or
// live and goes to the upstream every time.
func classify(path string) cacheKind {
	switch {
	case isTarball(path):
		return kindTarball
	case strings.HasPrefix(path, "/-/package/") && strings.HasSuffix(path, "/dist-tags"):
		return kindDistTags
	case strings.Contains(path, "/-/") || path == "/" || strings.HasPrefix(path, "/-"):
		return bypass
	}
	return kindPackument
}

// cacheKey is the entry of a request: upstream, target with its query,
// and for packuments the variant (abbreviated or full) and the edge's base
// the stored body was rebased onto.
func cacheKey(up *route, kind cacheKind, target string, abbreviated bool, edge string) string {
	var b strings.Builder
	b.Grow(len(target) + len(edge) + 24)
	b.WriteString(strconv.FormatUint(uint64(up.Hash)|1<<32, 16)[1:])
	b.WriteByte(' ')
	b.WriteString(target)
	if kind == kindPackument {
		if abbreviated {
			b.WriteString(" abbreviated")
		} else {
			b.WriteString(" full")
		}
		b.WriteByte(' ')
		b.WriteString(edge)
	}
	return b.String()
}

// flights are the cache fills in progress, by key.
type flights struct {
	mu      sync.Mutex
	waiting map[string]*atomic.Int32
}

// join counts a request waiting on key's fill; leave undoes it.
func (f *flights) join(key string) *atomic.Int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.waiting == nil {
		f.waiting = map[string]*atomic.Int32{}
	}
	n := f.waiting[key]
	if n == nil {
		n = &atomic.Int32{}
		f.waiting[key] = n
	}
	n.Add(1)
	return n
}

func (f *flights) leave(key string, n *atomic.Int32) {
	f.mu.Lock()
	if n.Add(-1) == 0 && f.waiting[key] == n {
		delete(f.waiting, key)
	}
	f.mu.Unlock()
}

// integrities remembers the dist.integrity of tarballs in packuments the
// edge served (by upstream and edge path), so that a tarball fill is
// checked against what clients were told. Bounded: when full, a random
// half is forgotten (a tarball with no known integrity is still checked
// for a whole gzip stream).
type integrities struct {
	mu sync.Mutex
	m  map[string]string
}

func (in *integrities) put(hash uint32, path, integrity string) {
	k := strconv.FormatUint(uint64(hash), 16) + path
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m == nil {
		in.m = map[string]string{}
	}
	if len(in.m) >= maxLearnSet {
		n := 0
		for k := range in.m {
			delete(in.m, k)
			if n++; n >= maxLearnSet/2 {
				break
			}
		}
	}
	in.m[k] = integrity
}

func (in *integrities) get(hash uint32, path string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.m[strconv.FormatUint(uint64(hash), 16)+path]
}

// matchesIntegrity checks a body digest against an SRI string (one or
// more "alg-base64" items, any of which may match; sha512 and sha1 are
// understood). ok is false when none could be checked.
func matchesIntegrity(sri string, sha512sum, sha1sum []byte) (match, ok bool) {
	for _, item := range strings.Fields(sri) {
		alg, b64, found := strings.Cut(item, "-")
		if !found {
			continue
		}
		if i := strings.IndexByte(b64, '?'); i >= 0 {
			b64 = b64[:i]
		}
		want, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		var got []byte
		switch alg {
		case "sha512":
			got = sha512sum
		case "sha1":
			got = sha1sum
		default:
			continue
		}
		ok = true
		if bytes.Equal(want, got) {
			return true, true
		}
	}
	return false, ok
}

// serveCacheable answers a GET or HEAD of a cacheable path: from the
// cache when fresh, else through one upstream exchange per key.
func (p *Proxy) serveCacheable(conn net.Conn, bw *bufio.Writer, req *fastRequest, v *verdict, reqID string, closeConn bool, kind cacheKind, acc *accessInfo) (int, int64, bool) {
	c := p.cfg.Cache
	up := v.route
	edge := p.edgeBaseOf(req, req.host, req.cs.tls != nil)
	accept, _ := req.header("Accept")
	key := cacheKey(up, kind, req.target, strings.Contains(accept, "application/vnd.npm.install-v1+json"), edge)
	e, cached := c.Lookup(key)
	if cached && p.fresh(&e, kind) {
		if code, n, ok, served := p.serveEntry(conn, bw, req, &e, reqID, closeConn, "hit", acc); served {
			return code, n, ok
		}
		cached = false // its file failed the check: fetch again
	}
	// A miss, or a stale entry to revalidate: one upstream exchange per key.
	n := p.flights.join(key)
	defer p.flights.leave(key, n)
	leader := false
	var led streamed
	var ledOK bool
	_, _, _ = p.flight.Do(key, func() (any, error) {
		leader = true
		led, ledOK = p.fetch(conn, bw, req, v, key, kind, edge, &e, cached, reqID, closeConn, n, acc)
		return nil, nil
	})
	if leader {
		return led.code, led.n, ledOK
	}
	// Another request fetched it: serve what it stored, or go upstream
	// alone (revalidating what is there) when it stored nothing fresh.
	e, cached = c.Lookup(key)
	if cached && p.fresh(&e, kind) {
		if code, n, ok, served := p.serveEntry(conn, bw, req, &e, reqID, closeConn, "hit", acc); served {
			return code, n, ok
		}
		cached = false
	}
	res, ok := p.fetch(conn, bw, req, v, key, kind, edge, &e, cached, reqID, closeConn, nil, acc)
	return res.code, res.n, ok
}

// fresh: a tarball 200 never changes; everything else is fresh for its
// TTL unless a peer said it changed.
func (p *Proxy) fresh(e *edgecache.Entry, kind cacheKind) bool {
	if kind == kindTarball && e.Status == http.StatusOK {
		return true
	}
	ttl := p.cfg.PackumentTTL
	if e.Status != http.StatusOK {
		ttl = p.cfg.NegativeTTL
	}
	return !e.Stale && time.Since(e.Stored) < ttl
}

// fetch asks the upstream (conditionally when a stale entry has
// validators) and answers the client: from the entry on a 304 or, within
// StaleIfError, when the upstream fails; else the upstream's response,
// streamed and, when it is storable, filled into the cache.
func (p *Proxy) fetch(conn net.Conn, bw *bufio.Writer, req *fastRequest, v *verdict, key string, kind cacheKind, edge string,
	e *edgecache.Entry, cached bool, reqID string, closeConn bool, waiting *atomic.Int32, acc *accessInfo) (streamed, bool) {
	c := p.cfg.Cache
	up := v.route
	var cond []string
	if cached {
		if et := e.Header.Get("Etag"); et != "" {
			cond = append(cond, "If-None-Match", et)
		}
		if lm := e.Header.Get("Last-Modified"); lm != "" {
			cond = append(cond, "If-Modified-Since", lm)
		}
	}
	// The client's own validators are for the edge's bytes, not the
	// upstream's: they are answered here, never forwarded.
	out := p.appendUpstreamRequest(nil, req, up, v.state, reqID, upstreamReqOpts{gzip: req.gzipOK && kind != kindTarball, skipConditional: true, extra: cond})
	h := &upstreamHead{}
	uc, err := p.exchangeFast(up, out, h)
	staleOK := cached && time.Since(e.Stored) < p.ttlOf(e)+p.cfg.StaleIfError
	switch {
	case err != nil && staleOK, err == nil && h.status >= 500 && staleOK:
		if uc != nil {
			uc.Close()
		}
		p.warnStale(key, err, h)
		if code, n, ok, served := p.serveEntry(conn, bw, req, e, reqID, closeConn, "stale", acc); served {
			return streamed{code: code, n: n}, ok
		}
		return p.refuseUpstream(bw, req, err, reqID, closeConn, acc), true
	case err != nil:
		return p.refuseUpstream(bw, req, err, reqID, closeConn, acc), true
	case h.status == http.StatusNotModified && cached:
		p.finishUpstream(up, uc, h)
		c.Refresh(key)
		if code, n, ok, served := p.serveEntry(conn, bw, req, e, reqID, closeConn, "hit", acc); served {
			return streamed{code: code, n: n}, ok
		}
		// The file went bad: ask again without validators.
		return p.fetch(conn, bw, req, v, key, kind, edge, nil, false, reqID, closeConn, waiting, acc)
	}
	c.Misses.Inc()
	acc.cache = "miss"
	o := streamOpts{cacheState: "miss", bodyIdle: p.cfg.BodyTimeout}
	if waiting != nil {
		o.keepFill = func() bool { return waiting.Load() > 1 }
	}
	packument := isPackumentResponse(req.method, req.path, h) && kind != kindTarball
	if packument {
		o.rewrite = &rebaser{origins: up.origins, edge: edge}
		o.learn = func(path, integrity string) { p.integrity.put(up.Hash, path, integrity) }
	}
	// Everything but a packument (decoded to be rebased) is stored as it
	// came, so only unencoded: the entry keeps no Content-Encoding, and a
	// gzipped body would reach clients that did not ask for it.
	storable := req.method == "GET" && (h.status == http.StatusOK || h.status == http.StatusNotFound) &&
		(h.length >= 0 || h.chunked) && (packument || h.encoding == "" && (kind == kindTarball || kind == kindDistTags || h.status != http.StatusOK))
	var gz *gzipCheck
	var sha1h = sha1.New()
	if storable {
		fill, err := c.NewFill(key, packument)
		if err == nil {
			o.fill = fill
			if kind == kindTarball && h.status == http.StatusOK {
				gz = newGzipCheck()
				o.check = func(b []byte) { gz.Write(b); sha1h.Write(b) }
			}
		}
	}
	if o.fill != nil {
		o.finish = func(res streamed) { p.commitFill(o.fill, res, key, kind, packument, up, req, h, gz, sha1h) }
	}
	res := p.stream(bw, req, up, uc, h, reqID, closeConn, o)
	return res, res.ok
}

// commitFill stores a filled response when it is provably whole and
// valid, and drops it otherwise.
func (p *Proxy) commitFill(fill *edgecache.Fill, res streamed, key string, kind cacheKind, packument bool, up *route, req *fastRequest, h *upstreamHead, gz *gzipCheck, sha1h hash.Hash) {
	gzErr := error(nil)
	if gz != nil {
		gzErr = gz.Close()
	}
	switch {
	case !res.complete:
		fill.Abort() // a body cut short, or of unknown length: served, never stored
		return
	case packument && !res.wholeDoc:
		fill.Abort()
		p.log.Warn("edge cache: a packument that is not one whole JSON object was passed on, not stored", "key", key)
		return
	case gzErr != nil:
		fill.Abort()
		p.log.Warn("edge cache: a tarball whose gzip stream does not end cleanly was passed on, not stored", "key", key, "err", gzErr)
		return
	}
	if kind == kindTarball && h.status == http.StatusOK {
		if sri := p.integrity.get(up.Hash, req.path); sri != "" {
			if match, checked := matchesIntegrity(sri, fill.SHA512(), sha1h.Sum(nil)); checked && !match {
				fill.Abort()
				p.log.Warn("edge cache: a tarball that does not match the integrity its packument gave was passed on, not stored", "key", key, "integrity", sri)
				return
			}
		}
	}
	// The upstream's validators revalidate the entry later; a tarball's
	// ETag is also what clients see (its bytes are the upstream's), a
	// packument's is the edge's own.
	hdr := http.Header{}
	hdr.Set("Content-Type", h.contentType)
	for i, name := range h.names {
		if strings.EqualFold(name, "Etag") || strings.EqualFold(name, "Last-Modified") {
			hdr.Set(name, h.values[i])
		}
	}
	etag := ""
	if !packument {
		etag = hdr.Get("Etag")
	}
	if _, err := fill.Commit(h.status, hdr, etag); err != nil && !errors.Is(err, edgecache.ErrTooLarge) {
		p.log.Debug("edge cache: not stored", "key", key, "err", err)
	}
}

func (p *Proxy) ttlOf(e *edgecache.Entry) time.Duration {
	if e.Status != http.StatusOK {
		return p.cfg.NegativeTTL
	}
	return p.cfg.PackumentTTL
}

// warnStale logs serving stale at most once every 10 s.
func (p *Proxy) warnStale(key string, err error, h *upstreamHead) {
	now := time.Now().UnixNano()
	if last := p.lastStaleLog.Load(); now-last < int64(10*time.Second) || !p.lastStaleLog.CompareAndSwap(last, now) {
		return
	}
	if err != nil {
		p.log.Warn("upstream failed: serving stale cached responses", "key", key, "err", err)
		return
	}
	p.log.Warn("upstream failed: serving stale cached responses", "key", key, "status", h.status)
}

// refuseUpstream answers a failed exchange.
func (p *Proxy) refuseUpstream(bw *bufio.Writer, req *fastRequest, err error, reqID string, closeConn bool, acc *accessInfo) streamed {
	acc.reason = upstreamReason(err)
	code := answerCode(err)
	e, retry := upstreamRefusal(err)
	n := writeRefusal(bw, req.method, code, e, retry, reqID, closeConn)
	return streamed{code: code, n: n, ok: true}
}

// serveEntry answers from a cache entry: 304 when the client's validators
// match, else the head and the file, sent by the kernel (sendfile) on a
// plain connection. served is false when the entry's file failed its
// check (nothing was written).
func (p *Proxy) serveEntry(conn net.Conn, bw *bufio.Writer, req *fastRequest, e *edgecache.Entry, reqID string, closeConn bool, state string, acc *accessInfo) (code int, n int64, ok, served bool) {
	c := p.cfg.Cache
	acc.cache = state
	// Counted before the answer is written: a client that reads the
	// metrics after its response sees its own request.
	count := func() {
		if state == "stale" {
			c.Stale.Inc()
		} else {
			c.Hits.Inc()
		}
	}
	if notModified(req, e) {
		count()
		writeStatusLine(bw, http.StatusNotModified)
		p.entryHeaders(bw, e, state, reqID, closeConn)
		bw.WriteString("\r\n")
		return http.StatusNotModified, 0, true, true
	}
	gz := e.GzipSize > 0 && req.gzipOK
	size := e.Size
	if gz {
		size = e.GzipSize
	}
	var f *os.File
	if req.method != "HEAD" {
		var err error
		if f, err = c.Open(e, gz); err != nil {
			return 0, 0, false, false
		}
		defer f.Close()
	}
	count()
	writeStatusLine(bw, e.Status)
	p.entryHeaders(bw, e, state, reqID, closeConn)
	if gz {
		bw.WriteString("Content-Encoding: gzip\r\n")
	}
	bw.WriteString("Content-Length: ")
	bw.WriteString(strconv.FormatInt(size, 10))
	bw.WriteString("\r\n\r\n")
	if f == nil {
		return e.Status, 0, true, true
	}
	if err := bw.Flush(); err != nil {
		return e.Status, 0, false, true
	}
	// A client that stops reading is cut after BodyTimeout of silence plus
	// the time the body takes at 64 KiB/s.
	conn.SetWriteDeadline(time.Now().Add(p.cfg.BodyTimeout + time.Duration(size/(64<<10))*time.Second))
	defer conn.SetWriteDeadline(time.Time{})
	var err error
	if _, plain := conn.(io.ReaderFrom); plain {
		n, err = io.Copy(conn, f) // TCPConn.ReadFrom (through cappedConn): sendfile(2)
	} else {
		buf := copyBufs.Get().(*[]byte)
		n, err = io.CopyBuffer(conn, struct{ io.Reader }{f}, *buf)
		copyBufs.Put(buf)
	}
	c.ServedBytes.Add(float64(n))
	return e.Status, n, err == nil && n == size, true
}

// entryHeaders writes the headers every answer from an entry carries.
func (p *Proxy) entryHeaders(bw *bufio.Writer, e *edgecache.Entry, state, reqID string, closeConn bool) {
	if ct := e.Header.Get("Content-Type"); ct != "" {
		bw.WriteString("Content-Type: ")
		bw.WriteString(ct)
		bw.WriteString("\r\n")
	}
	if e.ETag != "" {
		bw.WriteString("Etag: ")
		bw.WriteString(e.ETag)
		bw.WriteString("\r\n")
	}
	if lm := e.Header.Get("Last-Modified"); lm != "" {
		bw.WriteString("Last-Modified: ")
		bw.WriteString(lm)
		bw.WriteString("\r\n")
	}
	bw.WriteString("Age: ")
	bw.WriteString(strconv.FormatInt(max(int64(time.Since(e.Stored).Seconds()), 0), 10))
	bw.WriteString("\r\n")
	if e.GzipSize > 0 {
		bw.WriteString("Vary: Accept-Encoding\r\n")
	}
	bw.WriteString("X-Regedge-Cache: ")
	bw.WriteString(state)
	bw.WriteString("\r\nX-Bun-Request-Id: ")
	bw.WriteString(reqID)
	bw.WriteString("\r\n")
	if closeConn {
		bw.WriteString("Connection: close\r\n")
	}
}

// notModified: the client's If-None-Match names the entry's ETag (weak
// comparison, RFC 9110 §13.1.2), or, without If-None-Match, its
// If-Modified-Since is not before the entry's Last-Modified.
func notModified(req *fastRequest, e *edgecache.Entry) bool {
	if e.Status != http.StatusOK {
		return false
	}
	if inm, n := req.header("If-None-Match"); n > 0 {
		for _, tag := range strings.Split(inm, ",") {
			tag = strings.TrimPrefix(trimOWS(tag), "W/")
			if tag == "*" || tag != "" && tag == strings.TrimPrefix(e.ETag, "W/") {
				return true
			}
		}
		return false
	}
	ims, n := req.header("If-Modified-Since")
	lm := e.Header.Get("Last-Modified")
	if n == 0 || lm == "" {
		return false
	}
	t, err1 := http.ParseTime(ims)
	l, err2 := http.ParseTime(lm)
	return err1 == nil && err2 == nil && !l.After(t)
}

// gzipCheck decompresses a stream as it is written, to tell whether it is
// one whole gzip stream: a tarball cut inside its gzip framing is never
// stored.
type gzipCheck struct {
	pw   *io.PipeWriter
	done chan error
}

func newGzipCheck() *gzipCheck {
	pr, pw := io.Pipe()
	g := &gzipCheck{pw: pw, done: make(chan error, 1)}
	go func() {
		zr, err := gzip.NewReader(pr)
		if err == nil {
			zr.Multistream(false)
			buf := copyBufs.Get().(*[]byte)
			_, err = io.CopyBuffer(io.Discard, zr, *buf)
			copyBufs.Put(buf)
			if err == nil { // nothing may follow the stream
				if n, _ := io.Copy(io.Discard, pr); n > 0 {
					err = errors.New("bytes after the gzip stream")
				}
			}
		}
		pr.CloseWithError(err)
		g.done <- err
	}()
	return g
}

func (g *gzipCheck) Write(b []byte) {
	_, _ = g.pw.Write(b) // fails only once the reader has given up; Close returns its verdict
}

// Close ends the stream and returns what the decompressor found.
func (g *gzipCheck) Close() error {
	_ = g.pw.Close() // a PipeWriter's Close never fails
	return <-g.done
}

// keyPath is the request path of a cache key ("HASH TARGET[ VARIANT BASE]").
func keyPath(key string) (string, bool) {
	_, path, ok := strings.Cut(key, " ")
	path, _, _ = strings.Cut(path, " ")
	if q := strings.IndexByte(path, '?'); q >= 0 {
		path = path[:q]
	}
	return path, ok
}

// PurgeKeys matches the cache keys of a package (its packuments, full and
// abbreviated, its dist-tags and its tarballs), or of one version (its
// tarball, and the packuments, which list it).
func PurgeKeys(pkg, version string) func(key string) bool {
	escaped := strings.Replace(pkg, "/", "%2f", 1)
	base := pkg[strings.LastIndex(pkg, "/")+1:]
	return func(key string) bool {
		path, ok := keyPath(key)
		if !ok {
			return false
		}
		if isPackumentOf(path, pkg, escaped) {
			return true
		}
		if version == "" {
			for _, name := range []string{pkg, escaped, strings.ToLower(escaped)} {
				if strings.HasPrefix(path, "/"+name+"/-/") {
					return true
				}
			}
			return false
		}
		return path == "/"+pkg+"/-/"+base+"-"+version+".tgz"
	}
}

// packumentKeys matches the cached packuments and dist-tags of pkg and
// nothing else: what a write to the package makes out of date.
func packumentKeys(pkg string) func(key string) bool {
	escaped := strings.Replace(pkg, "/", "%2f", 1)
	return func(key string) bool {
		path, ok := keyPath(key)
		return ok && isPackumentOf(path, pkg, escaped)
	}
}

func isPackumentOf(path, pkg, escaped string) bool {
	for _, name := range []string{pkg, escaped, strings.ToLower(escaped)} {
		if path == "/"+name || path == "/-/package/"+name+"/dist-tags" {
			return true
		}
	}
	return false
}

// packageOf is the package a write request is about (PUT /name,
// PUT /@scope%2fname, DELETE /name/-rev/…, PUT
// /-/package/name/dist-tags/tag), or "" for registry endpoints such as
// /-/user/….
func packageOf(path string) string {
	if rest, ok := strings.CutPrefix(path, "/-/package/"); ok {
		name, _, _ := strings.Cut(rest, "/dist-tags")
		if strings.HasPrefix(name, "@") && !strings.Contains(name, "%2f") && !strings.Contains(name, "%2F") {
			return name
		}
		return strings.Replace(strings.Replace(name, "%2f", "/", 1), "%2F", "/", 1)
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if parts[0] == "" || strings.HasPrefix(parts[0], "-") {
		return ""
	}
	// /%40scope%2fname is @scope/name (as the scope rule reads it).
	if rest, ok := strings.CutPrefix(parts[0], "%40"); ok {
		parts[0] = "@" + rest
	}
	if strings.HasPrefix(parts[0], "@") {
		if scope, name, ok := strings.Cut(parts[0], "%2f"); ok {
			return scope + "/" + name
		}
		if scope, name, ok := strings.Cut(parts[0], "%2F"); ok {
			return scope + "/" + name
		}
		if len(parts) < 2 || parts[1] == "" {
			return ""
		}
		return parts[0] + "/" + parts[1]
	}
	return parts[0]
}

// forgetPublished drops the cached packuments and dist-tags of a package
// after a write to it went through the edge and the upstream took it
// (2xx), so the next install sees the new version instead of waiting out
// the TTL.
func (p *Proxy) forgetPublished(method, path string, status int) {
	if status/100 != 2 {
		return
	}
	switch method {
	case http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete:
	default:
		return
	}
	pkg := packageOf(path)
	if pkg == "" {
		return
	}
	if p.cfg.Cache != nil {
		if n := p.cfg.Cache.PurgeKeys(packumentKeys(pkg)); n > 0 {
			p.log.Info("cached packuments dropped after a write through the edge", "package", pkg, "method", method, "entries", n)
		}
	}
	if p.cfg.OnPackageChanged != nil {
		p.cfg.OnPackageChanged(pkg)
	}
}

// PackumentKeysOf matches the cached packuments (full and abbreviated) and
// dist-tags of any of pkgs, and nothing else: what a fleet hint marks
// stale, in one pass over the cache however many packages are due.
func PackumentKeysOf(pkgs []string) func(key string) bool {
	paths := make(map[string]struct{}, 6*len(pkgs))
	for _, pkg := range pkgs {
		escaped := strings.Replace(pkg, "/", "%2f", 1)
		for _, name := range []string{pkg, escaped, strings.ToLower(escaped)} {
			paths["/"+name] = struct{}{}
			paths["/-/package/"+name+"/dist-tags"] = struct{}{}
		}
	}
	return func(key string) bool {
		path, ok := keyPath(key)
		if !ok {
			return false
		}
		_, hit := paths[path]
		return hit
	}
}
