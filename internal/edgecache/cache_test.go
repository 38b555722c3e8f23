package edgecache

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

func open(t *testing.T, dir string, max int64) *Cache {
	t.Helper()
	c, err := Open(dir, max, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func put(t *testing.T, c *Cache, key, body string, gz bool) Entry {
	t.Helper()
	w, err := c.NewFill(key, gz)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	e, err := w.Commit(200, http.Header{"Etag": {`"up"`}, "Set-Cookie": {"no"}, "Content-Type": {"application/json"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func read(t *testing.T, c *Cache, key string, gz bool) (string, bool) {
	t.Helper()
	e, ok := c.Lookup(key)
	if !ok {
		return "", false
	}
	f, err := c.Open(&e, gz)
	if err != nil {
		return "", false
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	if e.Header.Get("Set-Cookie") != "" || e.Header.Get("Etag") != `"up"` {
		t.Fatalf("kept headers: %v", e.Header)
	}
	if gz {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(zr)
	}
	return string(b), true
}

func TestFillCommitSurvivesRestartAndCleansCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 1<<20)
	e := put(t, c, "k1", "hello", true)
	if e.ETag == "" || e.ETag == `"up"` || e.GzipSize == 0 {
		t.Fatalf("entry %+v: want the edge's own ETag and a gzip variant", e)
	}
	// What a crash leaves: a temp file, a body without meta, an old layout.
	os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(dir, strings.Repeat("ab", 32)+".body"), []byte("orphan"), 0o600)
	w, _ := c.NewFill("aborted", false)
	w.Write([]byte("half"))

	c2 := open(t, dir, 1<<20)
	for _, gz := range []bool{false, true} {
		if got, ok := read(t, c2, "k1", gz); !ok || got != "hello" {
			t.Fatalf("after restart (gzip %v): %q %v", gz, got, ok)
		}
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 3 { // k1's body, gzip variant and meta
		names := []string{}
		for _, f := range files {
			names = append(names, f.Name())
		}
		t.Fatalf("files after restart: %v", names)
	}
}

func TestHitsHashNothingTheScrubberFindsCorruption(t *testing.T) {
	c := open(t, t.TempDir(), 1<<20)
	put(t, c, "k", strings.Repeat("x", 10000), false)
	before := c.HashedBytes()
	for range 10 {
		if got, ok := read(t, c, "k", false); !ok || len(got) != 10000 {
			t.Fatal("hit failed")
		}
	}
	if c.HashedBytes() != before {
		t.Fatalf("hits hashed %d bytes", c.HashedBytes()-before)
	}
	// Flip a byte in place (same size, same inode): only a re-hash sees it.
	e, _ := c.Lookup("k")
	f, _ := os.OpenFile(c.bodyPath("k"), os.O_WRONLY, 0)
	f.WriteAt([]byte("y"), 5000)
	f.Close()
	if n := c.Scrub(context.Background(), 0); n != 1 {
		t.Fatalf("scrub discarded %d, want 1", n)
	}
	if _, ok := c.Lookup("k"); ok {
		t.Fatal("a corrupt entry is still listed")
	}
	if _, err := c.Open(&e, false); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open after scrub: %v", err)
	}
	if v := promtest.ToFloat64(c.Corrupt); v < 1 {
		t.Fatalf("regedge_cache_corrupt_total %v", v)
	}
}

func TestReplacedOrTruncatedFileIsNotServed(t *testing.T) {
	c := open(t, t.TempDir(), 1<<20)
	put(t, c, "a", "abcdef", false)
	put(t, c, "b", "abcdef", false)
	os.WriteFile(c.bodyPath("a"), []byte("abc"), 0o600) // truncated
	tmp := c.bodyPath("b") + ".new"                     // same size, another file
	os.WriteFile(tmp, []byte("ABCDEF"), 0o600)
	os.Rename(tmp, c.bodyPath("b"))
	for _, k := range []string{"a", "b"} {
		if got, ok := read(t, c, k, false); ok {
			t.Fatalf("%s served %q", k, got)
		}
	}
	if v := promtest.ToFloat64(c.Corrupt); v != 2 {
		t.Fatalf("corrupt %v, want 2", v)
	}
}

func TestBoundCountsDiskAndEntries(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 10*block)
	for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
		put(t, c, k, "404 body", false) // 9 bytes cost a block and a meta block
	}
	if c.Used() > 10*block || c.Len() != 5 {
		t.Fatalf("used %d with %d entries; bound %d", c.Used(), c.Len(), 10*block)
	}
	if _, ok := c.Lookup("a"); ok {
		t.Fatal("the least recently used entry is still there")
	}
	c2, _ := Open(t.TempDir(), 1<<20, Options{MaxEntries: 2})
	for _, k := range []string{"a", "b", "c"} {
		put(t, c2, k, "x", false)
	}
	if c2.Len() != 2 {
		t.Fatalf("%d entries, cap 2", c2.Len())
	}
}

func TestTooLargeWritesNothing(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 4*block)
	put(t, c, "small", "x", false)
	w, err := c.NewFill("big", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(w, bytes.NewReader(make([]byte, 5*block)))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err %v", err)
	}
	if _, err := w.Commit(200, nil, ""); err == nil {
		t.Fatal("a too-large fill committed")
	}
	if _, ok := read(t, c, "small", false); !ok {
		t.Fatal("a too-large fill evicted what it could not replace... and more")
	}
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		if strings.HasPrefix(f.Name(), ".tmp-") {
			t.Fatalf("left %s", f.Name())
		}
	}
	if c.Used() != diskSize(1)+metaBlock {
		t.Fatalf("used %d after an aborted fill", c.Used())
	}
}

func TestMarkStaleAndEvictExpired(t *testing.T) {
	c := open(t, t.TempDir(), 1<<20)
	put(t, c, "pkg", "{}", false)
	w, _ := c.NewFill("missing", false)
	w.Write([]byte(`{"error":"not found"}`))
	w.Commit(http.StatusNotFound, nil, "")
	if n := c.MarkStale(func(k string) bool { return k == "pkg" }); n != 1 {
		t.Fatalf("marked %d", n)
	}
	if e, _ := c.Lookup("pkg"); !e.Stale {
		t.Fatal("not stale")
	}
	c.Refresh("pkg")
	if e, _ := c.Lookup("pkg"); e.Stale {
		t.Fatal("still stale after a revalidation")
	}
	if n := c.EvictExpired(0); n != 1 {
		t.Fatalf("evicted %d expired negative entries, want 1", n)
	}
	if _, ok := c.Lookup("pkg"); !ok {
		t.Fatal("a 200 was evicted as expired")
	}
}
