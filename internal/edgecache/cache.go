// Package edgecache is the proxy's disk cache of registry responses
// (tarballs and packuments). Entries are written atomically (temp file,
// fsync, rename), carry the SHA-512 of their body and are verified before
// they are served (a corrupted file is discarded, never served), and the
// cache stays under a size bound by evicting the least recently used.
// Concurrent misses for one key fetch once. The index is rebuilt from the
// files on start, so the cache survives restarts.
package edgecache

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Entry describes one cached response.
type Entry struct {
	Key    string      `json:"key"`
	Status int         `json:"status"`
	Header http.Header `json:"header"` // Content-Type, ETag, Last-Modified
	Stored time.Time   `json:"stored"` // when fetched or last revalidated
	Size   int64       `json:"size"`
	SHA512 string      `json:"sha512"`

	lastUse time.Time
}

// Cache is the disk cache.
type Cache struct {
	dir string
	max int64

	mu    sync.Mutex
	index map[string]*Entry
	used  int64
	calls map[string]*call

	Hits, Misses, Stale, Evictions, Corrupt prometheus.Counter
	ServedBytes                             prometheus.Counter
}

type call struct {
	done    chan struct{}
	err     error
	waiters int // callers waiting on this fetch (under Cache.mu)
}

// Open opens (creating) a cache in dir bounded to maxBytes.
func Open(dir string, maxBytes int64) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("edgecache: %w", err)
	}
	c := &Cache{dir: dir, max: maxBytes, index: map[string]*Entry{}, calls: map[string]*call{}}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	c.Hits = counter("regedge_cache_hits_total", "Responses served from the edge cache.")
	c.Misses = counter("regedge_cache_misses_total", "Requests the edge cache could not serve.")
	c.Stale = counter("regedge_cache_stale_total", "Stale responses served because the upstream failed.")
	c.Evictions = counter("regedge_cache_evictions_total", "Entries evicted to stay under the size bound.")
	c.Corrupt = counter("regedge_cache_corrupt_total", "Cached files that failed verification and were discarded.")
	c.ServedBytes = counter("regedge_cache_served_bytes_total", "Bytes served from the edge cache.")
	metas, _ := filepath.Glob(filepath.Join(dir, "*.meta"))
	for _, m := range metas {
		b, err := os.ReadFile(m)
		var e Entry
		if err != nil || json.Unmarshal(b, &e) != nil || c.name(e.Key) != strings.TrimSuffix(filepath.Base(m), ".meta") {
			os.Remove(m)
			continue
		}
		e.lastUse = e.Stored
		c.index[e.Key] = &e
		c.used += e.Size
	}
	// What a crash can leave: temp files, and bodies whose meta never
	// landed. Neither is in the index, so both would sit outside the bound.
	tmps, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	for _, t := range tmps {
		os.Remove(t)
	}
	known := make(map[string]bool, len(c.index))
	for k := range c.index {
		known[c.name(k)] = true
	}
	bodies, _ := filepath.Glob(filepath.Join(dir, "*.body"))
	for _, b := range bodies {
		if !known[strings.TrimSuffix(filepath.Base(b), ".body")] {
			os.Remove(b)
		}
	}
	return c, nil
}

// Collectors returns the cache's metrics.
func (c *Cache) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.Hits, c.Misses, c.Stale, c.Evictions, c.Corrupt, c.ServedBytes}
}

func (c *Cache) name(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

func (c *Cache) bodyPath(key string) string { return filepath.Join(c.dir, c.name(key)+".body") }
func (c *Cache) metaPath(key string) string { return filepath.Join(c.dir, c.name(key)+".meta") }

// Get returns a verified entry and its body, open at the start, or
// ok=false. A body that does not match its recorded SHA-512 is removed and
// counted, never returned. The caller closes the file.
func (c *Cache) Get(key string) (*Entry, *os.File, bool) {
	c.mu.Lock()
	e := c.index[key]
	c.mu.Unlock()
	if e == nil {
		return nil, nil, false
	}
	f, err := os.Open(c.bodyPath(key))
	if err == nil {
		h := sha512.New()
		buf := bufs.Get().(*[]byte)
		// struct{io.Reader} hides File.WriteTo, which would ignore buf.
		n, cerr := io.CopyBuffer(h, struct{ io.Reader }{f}, *buf)
		bufs.Put(buf)
		_, serr := f.Seek(0, io.SeekStart)
		if cerr == nil && serr == nil && n == e.Size && hex.EncodeToString(h.Sum(nil)) == e.SHA512 {
			c.mu.Lock()
			e.lastUse = time.Now()
			cp := *e
			c.mu.Unlock()
			return &cp, f, true
		}
		f.Close()
	}
	c.Corrupt.Inc()
	c.remove(key)
	return nil, nil, false
}

// bufs are the buffers files are hashed through (io.Copy would allocate
// 32 KiB per verification).
var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ErrTooLarge is returned by Put for a body larger than the whole cache.
var ErrTooLarge = errors.New("edgecache: larger than the whole cache")

// Put streams a response body into the cache (never whole in memory),
// atomically, and returns its entry.
func (c *Cache) Put(key string, status int, hdr http.Header, body io.Reader) (*Entry, error) {
	f, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("edgecache: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	h := sha512.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, c.max+1))
	if err == nil && n > c.max {
		err = ErrTooLarge
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	keep := http.Header{}
	for _, name := range []string{"Content-Type", "Etag", "Last-Modified"} {
		if v := hdr.Get(name); v != "" {
			keep.Set(name, v)
		}
	}
	e := &Entry{Key: key, Status: status, Header: keep, Stored: time.Now(), Size: n,
		SHA512: hex.EncodeToString(h.Sum(nil)), lastUse: time.Now()}
	if err := os.Rename(tmp, c.bodyPath(key)); err != nil {
		return nil, fmt.Errorf("edgecache: %w", err)
	}
	meta, _ := json.Marshal(e)
	if err := writeAtomic(c.metaPath(key), meta); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if old := c.index[key]; old != nil {
		c.used -= old.Size
	}
	c.index[key] = e
	c.used += e.Size
	c.evictLocked(key)
	c.mu.Unlock()
	cp := *e
	return &cp, nil
}

// Refresh marks an entry as revalidated now (a 304 from the upstream).
func (c *Cache) Refresh(key string) {
	c.mu.Lock()
	e := c.index[key]
	if e != nil {
		e.Stored = time.Now()
	}
	c.mu.Unlock()
	if e != nil {
		meta, _ := json.Marshal(e)
		writeAtomic(c.metaPath(key), meta)
	}
}

// evictLocked removes least recently used entries (never keep) until the
// cache fits its bound.
func (c *Cache) evictLocked(keep string) {
	if c.used <= c.max {
		return
	}
	es := make([]*Entry, 0, len(c.index))
	for _, e := range c.index {
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return es[i].lastUse.Before(es[j].lastUse) })
	for _, e := range es {
		if c.used <= c.max {
			return
		}
		if e.Key == keep {
			continue
		}
		c.used -= e.Size
		delete(c.index, e.Key)
		os.Remove(c.bodyPath(e.Key))
		os.Remove(c.metaPath(e.Key))
		c.Evictions.Inc()
	}
}

func (c *Cache) remove(key string) {
	c.mu.Lock()
	if e := c.index[key]; e != nil {
		c.used -= e.Size
		delete(c.index, key)
	}
	c.mu.Unlock()
	os.Remove(c.bodyPath(key))
	os.Remove(c.metaPath(key))
}

// Purge removes every entry whose key contains match; it returns how many.
func (c *Cache) Purge(match func(key string) bool) int {
	c.mu.Lock()
	var keys []string
	for k := range c.index {
		if match(k) {
			keys = append(keys, k)
		}
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.remove(k)
	}
	return len(keys)
}

// Used returns the bytes the cache holds.
func (c *Cache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// Once runs fetch for key unless another caller is already fetching it, in
// which case it waits for that fetch: concurrent misses fetch once.
func (c *Cache) Once(key string, fetch func() error) error {
	c.mu.Lock()
	if cl, ok := c.calls[key]; ok {
		cl.waiters++
		c.mu.Unlock()
		<-cl.done
		return cl.err
	}
	cl := &call{done: make(chan struct{})}
	c.calls[key] = cl
	c.mu.Unlock()
	cl.err = fetch()
	c.mu.Lock()
	delete(c.calls, key)
	c.mu.Unlock()
	close(cl.done)
	return cl.err
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("edgecache: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return fmt.Errorf("edgecache: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("edgecache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("edgecache: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("edgecache: %w", err)
	}
	return nil
}
