package edgecache

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

func put(t *testing.T, c *Cache, key, body string) {
	t.Helper()
	if _, err := c.Put(key, 200, http.Header{"Etag": {`"e"`}, "Set-Cookie": {"no"}}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, c *Cache, key string) (string, bool) {
	t.Helper()
	e, f, ok := c.Get(key)
	if !ok {
		return "", false
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	if e.Header.Get("Set-Cookie") != "" || e.Header.Get("Etag") != `"e"` {
		t.Fatalf("kept headers: %v", e.Header)
	}
	return string(b), true
}

func TestPutGetSurvivesRestartAndCleansCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	put(t, c, "u /a", "alpha")
	if b, ok := read(t, c, "u /a"); !ok || b != "alpha" {
		t.Fatalf("get: %q %v", b, ok)
	}
	// a crash left a temp file and a body without meta
	os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "orphan.body"), []byte("lost"), 0o600)
	c2, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := read(t, c2, "u /a"); !ok || b != "alpha" || c2.Used() != 5 {
		t.Fatalf("after restart: %q %v used %d", b, ok, c2.Used())
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 2 { // a.body, a.meta
		t.Fatalf("leftovers not cleaned: %v", left)
	}
}

func TestCorruptBodyIsDiscarded(t *testing.T) {
	dir := t.TempDir()
	c, _ := Open(dir, 1<<20)
	put(t, c, "u /a", "alpha")
	os.WriteFile(c.bodyPath("u /a"), []byte("alphA"), 0o600) // same size, other bytes
	if _, ok := read(t, c, "u /a"); ok {
		t.Fatal("a corrupted body was served")
	}
	if promtest.ToFloat64(c.Corrupt) != 1 || c.Used() != 0 {
		t.Fatalf("corrupt %v used %d", promtest.ToFloat64(c.Corrupt), c.Used())
	}
	if _, err := os.Stat(c.bodyPath("u /a")); !os.IsNotExist(err) {
		t.Fatal("the corrupted file is still on disk")
	}
}

func TestEvictionKeepsTheBoundAndTooLargeWritesNothing(t *testing.T) {
	dir := t.TempDir()
	c, _ := Open(dir, 10)
	put(t, c, "k1", "aaaa")
	put(t, c, "k2", "bbbb")
	read(t, c, "k1") // k1 is now the most recently used
	put(t, c, "k3", "cccc")
	if c.Used() > 10 {
		t.Fatalf("used %d over the bound", c.Used())
	}
	if _, ok := read(t, c, "k2"); ok {
		t.Fatal("the least recently used entry survived")
	}
	if _, ok := read(t, c, "k1"); !ok {
		t.Fatal("a recently used entry was evicted")
	}
	if _, err := c.Put("big", 200, nil, strings.NewReader(strings.Repeat("x", 11))); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if _, ok := read(t, c, "big"); ok {
		t.Fatal("a too-large body was cached")
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if len(tmps) != 0 {
		t.Fatalf("temp files left: %v", tmps)
	}
	if n := c.Purge(func(k string) bool { return strings.HasPrefix(k, "k") }); n != 2 || c.Used() != 0 {
		t.Fatalf("purge: %d, used %d", n, c.Used())
	}
}

func TestOnceFetchesOnce(t *testing.T) {
	c, _ := Open(t.TempDir(), 1<<20)
	var fetches atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.Once("k", func() error { fetches.Add(1); close(started); <-release; return nil })
	}()
	<-started // the first fetch is in flight
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Once("k", func() error { fetches.Add(1); return nil })
		}()
	}
	// wait until all eight queue behind the first call, then let it finish
	for {
		c.mu.Lock()
		n := c.calls["k"].waiters
		c.mu.Unlock()
		if n == 8 {
			break
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if n := fetches.Load(); n != 1 {
		t.Fatalf("nine concurrent misses fetched %d times, want 1", n)
	}
}
