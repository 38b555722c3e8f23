package userproxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/regedge/regedge/internal/edgecache"
)

// isTarball: tarballs never change once published; they are cached without
// revalidation.
func isTarball(path string) bool {
	return strings.Contains(path, "/-/") && strings.HasSuffix(path, ".tgz")
}

// cacheKey: per upstream and path; full and abbreviated packuments apart
// (Vary: Accept).
func cacheKey(up *route, r *http.Request) string {
	key := fmt.Sprintf("%08x %s", up.Hash, r.URL.EscapedPath())
	if !isTarball(r.URL.Path) && strings.Contains(r.Header.Get("Accept"), "application/vnd.npm.install-v1+json") {
		key += " abbreviated"
	}
	return key
}

// cachedForward answers a GET from the edge cache when it can: tarballs
// once cached, packuments while fresh (then revalidated with If-None-Match /
// If-Modified-Since), and stale entries when the upstream fails within
// StaleIfError. Misses for one key fetch once.
func (p *Proxy) cachedForward(rw *recorder, r *http.Request, up *route, out *http.Request) {
	c := p.cfg.Cache
	key := cacheKey(up, r)
	if e, f, ok := c.Get(key); ok {
		defer f.Close()
		age := time.Since(e.Stored)
		ttl := p.cfg.PackumentTTL
		if e.Status == http.StatusNotFound {
			ttl = p.cfg.NegativeTTL
		}
		if isTarball(r.URL.Path) || age < ttl {
			c.Hits.Inc()
			p.serveCached(rw, r, up, e, f, age)
			return
		}
		if etag := e.Header.Get("Etag"); etag != "" {
			out.Header.Set("If-None-Match", etag)
		}
		if lm := e.Header.Get("Last-Modified"); lm != "" {
			out.Header.Set("If-Modified-Since", lm)
		}
		resp, err := p.roundTrip(r, up, out)
		switch {
		case errors.Is(err, errClientGone):
			rw.code = 499
			return
		case err == nil && resp.StatusCode == http.StatusNotModified:
			resp.Body.Close()
			c.Refresh(key)
			c.Hits.Inc()
			p.serveCached(rw, r, up, e, f, 0)
			return
		case (err != nil || resp.StatusCode >= 500) && age < ttl+p.cfg.StaleIfError:
			if resp != nil {
				resp.Body.Close()
			}
			c.Stale.Inc()
			p.log.Warn("upstream failed: serving a stale cached response", "key", key, "age_s", int(age.Seconds()))
			p.serveCached(rw, r, up, e, f, age)
			return
		case err != nil:
			p.answerUpstreamError(rw, err)
			return
		}
		// A new answer: store it (200, 404) and serve it, or pass it on.
		f.Close()
		p.storeAndServe(rw, r, up, key, resp)
		return
	}
	c.Misses.Inc()
	// The first miss fetches and stores; concurrent misses wait for it.
	leader := false
	var passOn *http.Response // the leader's answer when it is not cacheable
	err := c.Once(key, func() error {
		leader = true
		resp, err := p.roundTrip(r, up, out)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
			passOn = resp
			return nil
		}
		defer resp.Body.Close()
		_, err = c.Put(key, resp.StatusCode, resp.Header, resp.Body)
		return err
	})
	switch {
	case leader && passOn != nil:
		p.passOn(rw, r, up, passOn)
		return
	case leader && errors.Is(err, edgecache.ErrTooLarge):
		// Larger than the whole cache: fetch again and stream it through.
		resp, err := p.roundTrip(r, up, out)
		if err != nil {
			p.answerUpstreamError(rw, err)
			return
		}
		p.passOn(rw, r, up, resp)
		return
	case leader && err != nil:
		if isUpstreamErr(err) {
			p.answerUpstreamError(rw, err)
			return
		}
		// The body broke off, or the disk failed: never a truncated body.
		p.log.Warn("edge cache: could not store a response", "key", key, "err", err)
		rw.Header().Set("Retry-After", "5")
		writeJSON(rw, http.StatusBadGateway, apiError{Error: "Upstream response broke off"})
		return
	}
	if e, f, ok := c.Get(key); ok {
		defer f.Close()
		if !leader {
			c.Hits.Inc()
		}
		p.serveCached(rw, r, up, e, f, 0)
		return
	}
	// The leader's fetch failed: try once more for this request.
	resp, err := p.roundTrip(r, up, out)
	if err != nil {
		p.answerUpstreamError(rw, err)
		return
	}
	p.storeAndServe(rw, r, up, key, resp)
}

// isUpstreamErr tells a failed round trip from a failed store.
func isUpstreamErr(err error) bool {
	var co *circuitOpen
	var ue interface{ Timeout() bool }
	return errors.Is(err, errClientGone) || errors.As(err, &co) || errors.As(err, &ue)
}

// passOn streams an upstream answer through (rewriting packuments) and
// closes its body.
func (p *Proxy) passOn(rw *recorder, r *http.Request, up *route, resp *http.Response) {
	defer resp.Body.Close()
	if rewritable(r, resp) {
		p.serveRewritten(rw, r, resp, up)
		return
	}
	copyHeaders(rw.Header(), resp.Header)
	rw.WriteHeader(resp.StatusCode)
	buf := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(rw, resp.Body, *buf)
	copyBufs.Put(buf)
	if err != nil {
		// Never a truncated body that looks complete: abort the connection.
		panic(http.ErrAbortHandler)
	}
}

// storeAndServe caches a 200 or 404 answer (after a revalidation) and
// serves it from the cache; anything else is passed on uncached.
func (p *Proxy) storeAndServe(rw *recorder, r *http.Request, up *route, key string, resp *http.Response) {
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		p.passOn(rw, r, up, resp)
		return
	}
	e, err := p.cfg.Cache.Put(key, resp.StatusCode, resp.Header, resp.Body)
	resp.Body.Close()
	if err == nil {
		if _, f, ok := p.cfg.Cache.Get(key); ok {
			defer f.Close()
			p.serveCached(rw, r, up, e, f, 0)
			return
		}
	}
	p.log.Warn("edge cache: could not store a response", "key", key, "err", err)
	rw.Header().Set("Retry-After", "5")
	writeJSON(rw, http.StatusBadGateway, apiError{Error: "Upstream response broke off"})
}

// serveCached answers from a verified cache file; packuments get their
// tarball URLs rebased onto the edge as they are served.
func (p *Proxy) serveCached(rw *recorder, r *http.Request, up *route, e *edgecache.Entry, f *os.File, age time.Duration) {
	for k, vs := range e.Header {
		rw.Header()[k] = vs
	}
	if age > 0 {
		rw.Header().Set("Age", strconv.Itoa(int(age.Seconds())))
	}
	rw.Header().Set("X-Regedge-Cache", "hit")
	ct := e.Header.Get("Content-Type")
	if e.Status == http.StatusOK && !isTarball(r.URL.Path) &&
		(strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/vnd.npm.install-v1+json")) {
		body, err := io.ReadAll(io.LimitReader(f, maxPackument+1))
		if err != nil || len(body) > maxPackument {
			writeJSON(rw, http.StatusBadGateway, apiError{Error: "cached packument unreadable"})
			return
		}
		p.cfg.Cache.ServedBytes.Add(float64(len(body)))
		p.writePackument(rw, r, up, e.Status, body)
		return
	}
	rw.Header().Set("Content-Length", strconv.FormatInt(e.Size, 10))
	rw.WriteHeader(e.Status)
	if r.Method == http.MethodHead {
		return
	}
	buf := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(rw, struct{ io.Reader }{f}, *buf) // not File.WriteTo: it would ignore buf
	copyBufs.Put(buf)
	p.cfg.Cache.ServedBytes.Add(float64(n))
	if err != nil {
		panic(http.ErrAbortHandler)
	}
}

// PurgeKeys matches the cache keys of a package (its packuments, full and
// abbreviated, and its tarballs), or of one version (its tarball, and the
// packuments, which list it).
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

// packumentKeys matches the cached packuments of pkg (full and abbreviated)
// and nothing else: what a publish through the edge makes out of date.
func packumentKeys(pkg string) func(key string) bool {
	escaped := strings.Replace(pkg, "/", "%2f", 1)
	return func(key string) bool {
		path, ok := keyPath(key)
		return ok && isPackumentOf(path, pkg, escaped)
	}
}

// keyPath is the request path of a cache key ("UPSTREAM PATH[ abbreviated]").
func keyPath(key string) (string, bool) {
	_, path, ok := strings.Cut(key, " ")
	path, _, _ = strings.Cut(path, " ")
	return path, ok
}

func isPackumentOf(path, pkg, escaped string) bool {
	return path == "/"+pkg || path == "/"+escaped || path == "/"+strings.ToLower(escaped)
}

// packageOf is the package a write request is about (PUT /name,
// PUT /@scope%2fname, DELETE /name/-rev/…), or "" for registry endpoints
// such as /-/user/….
func packageOf(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if parts[0] == "" || strings.HasPrefix(parts[0], "-") {
		return ""
	}
	if strings.HasPrefix(parts[0], "@") {
		if len(parts) < 2 || parts[1] == "" {
			return ""
		}
		return parts[0] + "/" + parts[1]
	}
	return parts[0]
}

// forgetPublished drops the cached packuments of a package after a write
// to it went through the edge and the upstream took it (2xx), so the next
// install sees the new version instead of waiting out the TTL.
func (p *Proxy) forgetPublished(r *http.Request, status int) {
	if p.cfg.Cache == nil || status/100 != 2 {
		return
	}
	switch r.Method {
	case http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete:
	default:
		return
	}
	if pkg := packageOf(r.URL.Path); pkg != "" {
		if n := p.cfg.Cache.Purge(packumentKeys(pkg)); n > 0 {
			p.log.Info("cached packuments dropped after a write through the edge", "package", pkg, "method", r.Method, "entries", n)
		}
	}
}
