// Package edgecache is the proxy's disk cache of registry responses
// (tarballs and packuments), kept as they are served: a hit is a header
// write and the file handed to the kernel (sendfile), with no per-hit
// parsing or hashing.
//
// Integrity is checked where it is cheap and sure: a body is hashed
// (SHA-512) while it is filled and committed only when the caller says it
// is complete and valid; at serve time the file's size and identity are
// compared with its entry; a background scrubber re-hashes entries at a
// bounded rate and discards what fails. Files are written aside and
// renamed into place, the size bound counts what is on disk (blocks and
// metadata, files being written included), and the index is rebuilt from
// the files on start, so the cache survives restarts and crashes.
package edgecache

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metaVersion is the layout of the .meta files; others are discarded on
// start (it is a cache: they are fetched again).
const metaVersion = 2

// Entry describes one cached response.
type Entry struct {
	V      int         `json:"v"`
	Key    string      `json:"key"`
	Status int         `json:"status"`
	Header http.Header `json:"header"` // Content-Type, and the upstream's Etag and Last-Modified (for revalidation)
	// ETag is the edge's validator of the body it serves (clients'
	// If-None-Match is compared with it).
	ETag   string    `json:"etag"`
	Stored time.Time `json:"stored"` // when fetched or last revalidated
	Size   int64     `json:"size"`
	SHA512 string    `json:"sha512"`
	// GzipSize > 0: a gzip variant of the body is kept for clients that
	// accept it.
	GzipSize   int64  `json:"gzipSize,omitempty"`
	GzipSHA512 string `json:"gzipSha512,omitempty"`
	// Identities of the files, compared at serve time: a file replaced
	// behind the cache's back is not served.
	Ino   uint64 `json:"ino"`
	GzIno uint64 `json:"gzIno,omitempty"`
	// Stale marks an entry to revalidate before its next use (a peer said
	// the package changed).
	Stale bool `json:"stale,omitempty"`

	lastUse time.Time
	disk    int64 // bytes on disk, metadata included
}

// Options tunes a cache beyond its directory and size bound.
type Options struct {
	MaxEntries int          // 0: 1,000,000
	Log        *slog.Logger // disk errors, corruption; nil: slog.Default()
}

// Cache is the disk cache.
type Cache struct {
	dir        string
	max        int64
	maxEntries int
	log        *slog.Logger

	mu      sync.Mutex
	index   map[string]*Entry
	used    int64 // on disk, committed entries
	writing int64 // reserved by fills in progress

	lastDiskLog atomic.Int64 // unix ns of the last disk-error log line
	hashed      atomic.Int64 // bytes hashed (fills and scrubs; never hits)

	Hits, Misses, Stale, Evictions, Corrupt prometheus.Counter
	ServedBytes, WriteErrors, ScrubbedBytes prometheus.Counter
	gauges                                  []prometheus.Collector
}

// Open opens (creating) a cache in dir bounded to maxBytes on disk.
func Open(dir string, maxBytes int64, opts Options) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("edgecache: %w", err)
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 1_000_000
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	c := &Cache{dir: dir, max: maxBytes, maxEntries: opts.MaxEntries, log: opts.Log, index: map[string]*Entry{}}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	c.Hits = counter("regedge_cache_hits_total", "Responses served from the edge cache.")
	c.Misses = counter("regedge_cache_misses_total", "Requests the edge cache could not serve.")
	c.Stale = counter("regedge_cache_stale_total", "Stale responses served because the upstream failed.")
	c.Evictions = counter("regedge_cache_evictions_total", "Entries evicted to stay under the size or entry bound.")
	c.Corrupt = counter("regedge_cache_corrupt_total", "Cached files that failed verification (at serve time or by the scrubber) and were discarded.")
	c.ServedBytes = counter("regedge_cache_served_bytes_total", "Body bytes served from the edge cache.")
	c.WriteErrors = counter("regedge_cache_write_errors_total", "Cache fills that failed on the disk (full, I/O error); the response still reached the client.")
	c.ScrubbedBytes = counter("regedge_cache_scrubbed_bytes_total", "Bytes re-hashed by the background scrubber.")
	c.gauges = []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "regedge_cache_bytes", Help: "Bytes the edge cache holds on disk (metadata and files being written included)."},
			func() float64 { c.mu.Lock(); defer c.mu.Unlock(); return float64(c.used + c.writing) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "regedge_cache_entries", Help: "Entries in the edge cache."},
			func() float64 { c.mu.Lock(); defer c.mu.Unlock(); return float64(len(c.index)) }),
	}
	c.load()
	return c, nil
}

// load rebuilds the index from the files, and removes what a crash or an
// older layout left behind.
func (c *Cache) load() {
	metas, _ := filepath.Glob(filepath.Join(c.dir, "*.meta"))
	for _, m := range metas {
		b, err := os.ReadFile(m)
		var e Entry
		if err != nil || json.Unmarshal(b, &e) != nil || e.V != metaVersion || c.name(e.Key) != strings.TrimSuffix(filepath.Base(m), ".meta") {
			_ = os.Remove(m) // unreadable or from another layout: best effort, it is a cache
			continue
		}
		// The files must be there with their recorded sizes; their
		// contents are the scrubber's to check.
		ino, ok := fileID(c.bodyPath(e.Key), e.Size)
		if !ok {
			c.removeFiles(e.Key)
			continue
		}
		e.Ino = ino
		if e.GzipSize > 0 {
			if e.GzIno, ok = fileID(c.gzipPath(e.Key), e.GzipSize); !ok {
				c.removeFiles(e.Key)
				continue
			}
		}
		e.lastUse, e.disk = e.Stored, diskSize(e.Size)+diskSize(e.GzipSize)+metaBlock
		c.index[e.Key] = &e
		c.used += e.disk
	}
	known := make(map[string]bool, len(c.index))
	for k := range c.index {
		known[c.name(k)] = true
	}
	files, _ := filepath.Glob(filepath.Join(c.dir, "*"))
	for _, f := range files {
		base := filepath.Base(f)
		name, _, _ := strings.Cut(base, ".")
		if strings.HasPrefix(base, ".tmp-") || !known[name] {
			_ = os.Remove(f) // crash leftovers: best effort
		}
	}
	c.mu.Lock()
	c.evictLocked("", 0)
	c.mu.Unlock()
}

func fileID(path string, size int64) (uint64, bool) {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, true
	}
	return uint64(st.Ino), true
}

// metaBlock is what a .meta file costs on disk; bodies are counted in
// whole blocks.
const (
	block     = 4096
	metaBlock = block
)

func diskSize(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n + block - 1) / block * block
}

// Collectors returns the cache's metrics.
func (c *Cache) Collectors() []prometheus.Collector {
	return append([]prometheus.Collector{c.Hits, c.Misses, c.Stale, c.Evictions, c.Corrupt, c.ServedBytes, c.WriteErrors, c.ScrubbedBytes}, c.gauges...)
}

func (c *Cache) name(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

func (c *Cache) bodyPath(key string) string { return filepath.Join(c.dir, c.name(key)+".body") }
func (c *Cache) gzipPath(key string) string { return filepath.Join(c.dir, c.name(key)+".gz") }
func (c *Cache) metaPath(key string) string { return filepath.Join(c.dir, c.name(key)+".meta") }

// Lookup returns a copy of key's entry, without touching the disk.
func (c *Cache) Lookup(key string) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.index[key]
	if e == nil {
		return Entry{}, false
	}
	e.lastUse = time.Now()
	return *e, true
}

// ErrCorrupt: an entry's file is not the one that was committed.
var ErrCorrupt = errors.New("edgecache: cached file does not match its entry")

// Open opens the body (or, with gz, the gzip variant) of an entry from
// Lookup, after checking that the file is the one committed (size and
// identity). A file that is not is removed and counted, never returned.
// No hashing: that was done at fill time, and the scrubber redoes it.
func (c *Cache) Open(e *Entry, gz bool) (*os.File, error) {
	path, size, ino := c.bodyPath(e.Key), e.Size, e.Ino
	if gz {
		path, size, ino = c.gzipPath(e.Key), e.GzipSize, e.GzIno
	}
	f, err := os.Open(path)
	if err == nil {
		fi, serr := f.Stat()
		if serr == nil && fi.Mode().IsRegular() && fi.Size() == size && (ino == 0 || sysIno(fi) == ino) {
			return f, nil
		}
		f.Close()
	}
	c.discard(e.Key, "serve")
	return nil, ErrCorrupt
}

func sysIno(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}

// discard removes a corrupt entry and says so.
func (c *Cache) discard(key, where string) {
	c.Corrupt.Inc()
	c.log.Warn("edge cache: a cached file failed verification and was discarded", "key", key, "found_by", where)
	c.remove(key)
}

// ErrTooLarge: a body larger than the cache can hold.
var ErrTooLarge = errors.New("edgecache: larger than the cache can hold")

// Fill writes one response into the cache as it streams by: Write the
// body (the bytes clients are served), then Commit or Abort. A Fill never
// makes the caller's response fail: after a disk error or ErrTooLarge its
// Write keeps returning that error and the caller stops writing to it.
type Fill struct {
	c        *Cache
	key      string
	f, gzf   *os.File
	zw       *gzip.Writer
	gzh      hash.Hash
	gzn      countWriter
	h        hash.Hash
	n        int64
	reserved int64
	err      error
	done     bool
}

type countWriter struct {
	w io.Writer
	n int64
}

func (cw *countWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

// NewFill starts a fill of key; withGzip also keeps a gzip variant.
func (c *Cache) NewFill(key string, withGzip bool) (*Fill, error) {
	w := &Fill{c: c, key: key, h: sha512.New()}
	var err error
	if w.f, err = os.CreateTemp(c.dir, ".tmp-*"); err != nil {
		c.diskError(err, 0)
		return nil, fmt.Errorf("edgecache: %w", err)
	}
	if withGzip {
		if w.gzf, err = os.CreateTemp(c.dir, ".tmp-*"); err != nil {
			w.Abort()
			c.diskError(err, 0)
			return nil, fmt.Errorf("edgecache: %w", err)
		}
		w.gzh = sha512.New()
		w.gzn.w = io.MultiWriter(w.gzf, w.gzh)
		w.zw, _ = gzip.NewWriterLevel(&w.gzn, gzip.DefaultCompression)
	}
	if err := w.reserve(metaBlock); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// reserve counts n more bytes on disk against the bound, evicting the
// least recently used entries to make room.
func (w *Fill) reserve(n int64) error {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.reserved+n > c.max {
		return ErrTooLarge
	}
	c.writing += n
	w.reserved += n
	c.evictLocked(w.key, 0)
	// A little ahead where there is room, so that most writes take no lock.
	if ahead := min(int64(64<<10), c.max-c.used-c.writing); ahead > 0 {
		c.writing += ahead
		w.reserved += ahead
	}
	return nil
}

// Write adds body bytes.
func (w *Fill) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	// Reserve in whole blocks, a few at a time.
	need := diskSize(w.n+int64(len(p))) + metaBlock
	if w.zw != nil { // the gzip variant: counted at the body's size until it is known
		need += diskSize(w.n + int64(len(p)))
	}
	if need > w.reserved {
		if err := w.reserve(need - w.reserved); err != nil {
			w.err = err
			return 0, err
		}
	}
	if _, err := w.f.Write(p); err != nil {
		w.fail(err)
		return 0, w.err
	}
	w.h.Write(p)
	if w.zw != nil {
		if _, err := w.zw.Write(p); err != nil {
			w.fail(err)
			return 0, w.err
		}
	}
	w.n += int64(len(p))
	return len(p), nil
}

func (w *Fill) fail(err error) {
	w.err = fmt.Errorf("edgecache: %w", err)
	w.c.diskError(err, w.reserved)
}

// Size is the body bytes written so far.
func (w *Fill) Size() int64 { return w.n }

// SHA512 is the digest of the body written so far.
func (w *Fill) SHA512() []byte { return w.h.Sum(nil) }

// Err is the error that stopped the fill, if any.
func (w *Fill) Err() error { return w.err }

// Commit stores the body as key's entry (status and the headers to keep:
// Content-Type, Etag, Last-Modified). etag is the edge's validator; ""
// derives one from the body's digest.
func (w *Fill) Commit(status int, hdr http.Header, etag string) (Entry, error) {
	if w.err != nil {
		w.Abort()
		return Entry{}, w.err
	}
	sum := w.h.Sum(nil)
	w.c.hashed.Add(w.n)
	if etag == "" {
		etag = `"` + hex.EncodeToString(sum[:16]) + `"`
	}
	e := &Entry{V: metaVersion, Key: w.key, Status: status, Header: http.Header{}, ETag: etag, Stored: time.Now(),
		Size: w.n, SHA512: hex.EncodeToString(sum)}
	for _, name := range []string{"Content-Type", "Etag", "Last-Modified"} {
		if v := hdr.Get(name); v != "" {
			e.Header.Set(name, v)
		}
	}
	err := w.finishFile(w.f, w.c.bodyPath(w.key), &e.Ino)
	if err == nil && w.zw != nil {
		if err = w.zw.Close(); err == nil {
			e.GzipSize, e.GzipSHA512 = w.gzn.n, hex.EncodeToString(w.gzh.Sum(nil))
			err = w.finishFile(w.gzf, w.c.gzipPath(w.key), &e.GzIno)
		}
	}
	if err == nil {
		meta, _ := json.Marshal(e)
		err = writeAtomic(w.c.metaPath(w.key), meta)
	}
	if err != nil {
		w.c.diskError(err, w.reserved)
		w.Abort()
		w.c.removeFiles(w.key)
		return Entry{}, fmt.Errorf("edgecache: %w", err)
	}
	e.disk, e.lastUse = diskSize(e.Size)+diskSize(e.GzipSize)+metaBlock, e.Stored
	c := w.c
	c.mu.Lock()
	c.writing -= w.reserved
	w.reserved, w.done = 0, true
	if old := c.index[w.key]; old != nil {
		c.used -= old.disk
	}
	c.index[w.key] = e
	c.used += e.disk
	c.evictLocked(w.key, 0)
	c.mu.Unlock()
	return *e, nil
}

// finishFile syncs and closes a temp file and renames it into place.
func (w *Fill) finishFile(f *os.File, path string, ino *uint64) error {
	err := f.Sync()
	if fi, serr := f.Stat(); err == nil && serr == nil {
		*ino = sysIno(fi)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	return err
}

// Abort drops the fill.
func (w *Fill) Abort() {
	if w.done {
		return
	}
	w.done = true
	for _, f := range []*os.File{w.f, w.gzf} {
		if f != nil {
			f.Close()
			_ = os.Remove(f.Name()) // a temp file: best effort
		}
	}
	w.c.mu.Lock()
	w.c.writing -= w.reserved
	w.reserved = 0
	w.c.mu.Unlock()
}

// diskError counts a disk failure, logs it at most every 10 s, and makes
// room when the disk is full.
func (c *Cache) diskError(err error, want int64) {
	c.WriteErrors.Inc()
	now := time.Now().UnixNano()
	if last := c.lastDiskLog.Load(); now-last > int64(10*time.Second) && c.lastDiskLog.CompareAndSwap(last, now) {
		c.log.Error("edge cache: disk error while filling; responses stream through uncached", "dir", c.dir, "err", err)
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		c.mu.Lock()
		c.evictLocked("", max(2*want, 1<<20))
		c.mu.Unlock()
	}
}

// Refresh marks an entry as revalidated now (a 304 from the upstream).
func (c *Cache) Refresh(key string) {
	c.mu.Lock()
	e := c.index[key]
	var meta []byte
	if e != nil {
		e.Stored, e.Stale = time.Now(), false
		meta, _ = json.Marshal(e)
	}
	c.mu.Unlock()
	if meta != nil {
		if err := writeAtomic(c.metaPath(key), meta); err != nil {
			c.diskError(err, 0)
		}
	}
}

// MarkStale makes the matching entries revalidate before their next use;
// it returns how many.
func (c *Cache) MarkStale(match func(key string) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, e := range c.index {
		if match(k) {
			e.Stale = true
			n++
		}
	}
	return n
}

// evictLocked removes least recently used entries (never keep) until the
// cache fits its bounds with free bytes to spare.
func (c *Cache) evictLocked(keep string, free int64) {
	if c.used+c.writing+free <= c.max && len(c.index) <= c.maxEntries {
		return
	}
	es := make([]*Entry, 0, len(c.index))
	for _, e := range c.index {
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return es[i].lastUse.Before(es[j].lastUse) })
	for _, e := range es {
		if c.used+c.writing+free <= c.max && len(c.index) <= c.maxEntries {
			return
		}
		if e.Key == keep {
			continue
		}
		c.used -= e.disk
		delete(c.index, e.Key)
		c.removeFiles(e.Key)
		c.Evictions.Inc()
	}
}

// EvictExpired removes entries other than 200s that are older than ttl
// (expired negative answers); it returns how many.
func (c *Cache) EvictExpired(ttl time.Duration) int {
	cutoff := time.Now().Add(-ttl)
	return c.Purge(func(e *Entry) bool { return e.Status != http.StatusOK && e.Stored.Before(cutoff) })
}

func (c *Cache) remove(key string) {
	c.mu.Lock()
	if e := c.index[key]; e != nil {
		c.used -= e.disk
		delete(c.index, key)
	}
	c.mu.Unlock()
	c.removeFiles(key)
}

func (c *Cache) removeFiles(key string) {
	// Best effort: a file that stays is an orphan, removed at the next
	// start (it is in no index).
	_ = os.Remove(c.bodyPath(key))
	_ = os.Remove(c.gzipPath(key))
	_ = os.Remove(c.metaPath(key))
}

// Purge removes every entry match accepts; it returns how many.
func (c *Cache) Purge(match func(e *Entry) bool) int {
	c.mu.Lock()
	var keys []string
	for k, e := range c.index {
		if match(e) {
			keys = append(keys, k)
		}
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.remove(k)
	}
	return len(keys)
}

// PurgeKeys removes every entry whose key match accepts.
func (c *Cache) PurgeKeys(match func(key string) bool) int {
	return c.Purge(func(e *Entry) bool { return match(e.Key) })
}

// Used returns the bytes the cache holds on disk (files being written
// included).
func (c *Cache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used + c.writing
}

// Len returns the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.index)
}

// HashedBytes is how many bytes the cache has hashed, at fills and by the
// scrubber: serving a hit adds nothing.
func (c *Cache) HashedBytes() int64 { return c.hashed.Load() }

// Scrub re-hashes every entry once, at most rate bytes per second (0: no
// limit), and discards those whose files no longer match; it returns how
// many it discarded.
func (c *Cache) Scrub(ctx context.Context, rate int64) int {
	c.mu.Lock()
	entries := make([]Entry, 0, len(c.index))
	for _, e := range c.index {
		entries = append(entries, *e)
	}
	c.mu.Unlock()
	bad := 0
	start, done := time.Now(), int64(0)
	for i := range entries {
		e := &entries[i]
		if ctx.Err() != nil {
			return bad
		}
		ok := c.verify(e.Key, c.bodyPath(e.Key), e.Size, e.SHA512)
		if ok && e.GzipSize > 0 {
			ok = c.verify(e.Key, c.gzipPath(e.Key), e.GzipSize, e.GzipSHA512)
		}
		done += e.Size + e.GzipSize
		if !ok {
			c.mu.Lock()
			cur := c.index[e.Key]
			same := cur != nil && cur.SHA512 == e.SHA512 && cur.Ino == e.Ino
			c.mu.Unlock()
			if same { // not replaced by a new fill meanwhile
				c.discard(e.Key, "scrubber")
				bad++
			}
		}
		if rate > 0 {
			if ahead := time.Duration(float64(done)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				t := time.NewTimer(ahead)
				select {
				case <-ctx.Done():
					t.Stop()
					return bad
				case <-t.C:
				}
			}
		}
	}
	return bad
}

// RunScrubber scrubs the cache again and again at rate bytes per second
// until ctx ends, resting every between passes.
func (c *Cache) RunScrubber(ctx context.Context, rate int64, every time.Duration) {
	for {
		c.Scrub(ctx, rate)
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (c *Cache) verify(key, path string, size int64, want string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha512.New()
	buf := bufs.Get().(*[]byte)
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, *buf) // not File.WriteTo: it would ignore buf
	bufs.Put(buf)
	c.hashed.Add(n)
	c.ScrubbedBytes.Add(float64(n))
	return err == nil && n == size && hex.EncodeToString(h.Sum(nil)) == want
}

// bufs are the buffers files are hashed through.
var bufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // no-op after the rename
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	return err
}
