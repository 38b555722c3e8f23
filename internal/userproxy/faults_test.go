package userproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/testutil"
)

// faultUpstream is a raw-socket upstream: each connection reads one
// request head and hands the connection to the handler for the path,
// which writes whatever bytes (and faults) the test wants.
type faultUpstream struct {
	ln       net.Listener
	URL      string
	requests atomic.Int64
	open     atomic.Int64 // connections not yet closed
	handle   func(path string, c net.Conn)
	wg       sync.WaitGroup
}

func newFaultUpstream(t *testing.T, handle func(path string, c net.Conn)) *faultUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &faultUpstream{ln: ln, URL: "http://" + ln.Addr().String(), handle: handle}
	f.serve(t)
	return f
}

// serve accepts connections on f.ln until the test ends.
func (f *faultUpstream) serve(t *testing.T) {
	ln := f.ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.open.Add(1)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer f.open.Add(-1)
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					f.requests.Add(1)
					f.handle(req.URL.Path, c)
					if req.Close {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
}

// newTLSFaultUpstream is a faultUpstream over TLS (HTTP/1.1 only, a fresh
// self-signed certificate for 127.0.0.1); roots trusts it.
func newTLSFaultUpstream(t *testing.T, handle func(path string, c net.Conn)) (*faultUpstream, *x509.CertPool) {
	t.Helper()
	return newTLSFaultUpstreamOn(t, nil, handle)
}

// newTLSFaultUpstreamOn is newTLSFaultUpstream with its TCP listener
// wrapped by wrap (when not nil) under TLS.
func newTLSFaultUpstreamOn(t *testing.T, wrap func(net.Listener) net.Listener, handle func(path string, c net.Conn)) (*faultUpstream, *x509.CertPool) {
	t.Helper()
	certFile, keyFile := testutil.SelfSignedCert(t, t.TempDir(), "upstream")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	under := ln
	if wrap != nil {
		under = wrap(ln)
	}
	tf := &faultUpstream{ln: tls.NewListener(under, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}),
		URL: "https://" + ln.Addr().String(), handle: handle}
	tf.serve(t)
	return tf, roots
}

func faultEdge(t *testing.T, up *faultUpstream, tweak func(*Config)) (*edge, *edgecache.Cache) {
	t.Helper()
	return faultEdgeOn(t, fastFront, up, tweak)
}

// faultEdgeOn is faultEdge on front end fe.
func faultEdgeOn(t *testing.T, fe frontEnd, up *faultUpstream, tweak func(*Config)) (*edge, *edgecache.Cache) {
	t.Helper()
	return cachedEdgeOn(t, fe, 1<<26, func(c *Config) {
		c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
		c.BodyTimeout = 500 * time.Millisecond
		c.Timeout = 2 * time.Second
		if tweak != nil {
			tweak(c)
		}
	})
}

// getRaw fetches path through the edge and reports the body and whether
// it arrived whole by its framing.
func getRaw(t *testing.T, e *edge, path string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.token(t, "0xa1b2c3d4"))
	req.Header.Set("Accept-Encoding", "identity")
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// TestCutBodiesAreNeverCached: a tarball or packument whose body ends
// before its framing says (or whose framing cannot prove it whole) reaches
// the client as it came (cut where the upstream cut it) and never enters
// the cache: the next request goes upstream again and gets the whole body.
func TestCutBodiesAreNeverCached(t *testing.T) { onBothFrontEnds(t, testCutBodiesAreNeverCached) }

func testCutBodiesAreNeverCached(t *testing.T, fe frontEnd) {
	tgz := npmfixture.Tarball(map[string]string{"index.js": strings.Repeat("module.exports = 1;\n", 2000)})
	doc := `{"name":"a","versions":{"1.0.0":{"dist":{"tarball":"http://x/a/-/a-1.0.0.tgz"}}}}`
	var healthy atomic.Bool
	cases := []struct {
		name, path string
		fault      func(c net.Conn)
		whole      []byte
	}{
		{"close-delimited tarball", "/a/-/a-1.0.0.tgz", func(c net.Conn) {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
			c.Write(tgz[:len(tgz)/2])
		}, tgz},
		{"short Content-Length", "/a/-/a-1.0.1.tgz", func(c net.Conn) {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(tgz))
			c.Write(tgz[:len(tgz)-100])
		}, tgz},
		{"cut chunked packument", "/a", func(c net.Conn) {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", 20, doc[:20])
		}, nil},
		{"cut gzip inside a whole Content-Length", "/a/-/a-1.0.2.tgz", func(c net.Conn) {
			cut := tgz[:len(tgz)-30] // the gzip trailer and some deflate data are missing
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(cut))
			c.Write(cut)
		}, tgz},
		{"JSON cut inside a whole Content-Length", "/b", func(c net.Conn) {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", 30, doc[:30])
		}, nil},
	}
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		for _, tc := range cases {
			if tc.path != path {
				continue
			}
			if !healthy.Load() {
				tc.fault(c)
				c.Close()
				return
			}
			body := tc.whole
			if body == nil {
				body = []byte(doc)
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(body))
			c.Write(body)
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
	})
	e, c := faultEdgeOn(t, fe, up, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			healthy.Store(false)
			resp, b, err := getRaw(t, e, tc.path)
			if err == nil && resp.StatusCode == 200 && tc.whole != nil && bytes.Equal(b, tc.whole) {
				t.Fatal("a cut body came out whole?")
			}
			if c.Len() != 0 {
				t.Fatalf("the cut body was cached (%d entries)", c.Len())
			}
			healthy.Store(true)
			before := up.requests.Load()
			resp, b, err = getRaw(t, e, tc.path)
			if err != nil || resp.StatusCode != 200 || tc.whole != nil && !bytes.Equal(b, tc.whole) {
				t.Fatalf("after the fault: %v %v, %d bytes", err, resp, len(b))
			}
			if up.requests.Load() != before+1 {
				t.Fatal("the second request did not go upstream")
			}
			c.PurgeKeys(func(string) bool { return true })
		})
	}
}

// TestIntegrityMismatchIsNotCached: a tarball that does not match the
// dist.integrity of the packument the edge served is passed on (the client
// judges it) but never stored.
func TestIntegrityMismatchIsNotCached(t *testing.T) {
	onBothFrontEnds(t, testIntegrityMismatchIsNotCached)
}

func testIntegrityMismatchIsNotCached(t *testing.T, fe frontEnd) {
	e, c := cachedEdgeOn(t, fe, 1<<24, nil)
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	e.get(t, "/@mycompany%2fhello", auth) // learn the integrity
	// Now the upstream serves other bytes for the same version.
	e.reg.Add(npmfixture.Package{Name: "@mycompany/hello", Version: "1.2.3", Files: map[string]string{"index.js": "tampered"}})
	resp, _ := e.get(t, tarballPath, auth)
	if resp.StatusCode != 200 {
		t.Fatalf("%d", resp.StatusCode)
	}
	if _, ok := c.Lookup(cacheKey(e.proxy.routes[companyHash], kindTarball, tarballPath, false, "")); ok {
		t.Fatal("a tarball that does not match its integrity was cached")
	}
}

// TestSlowUpstreamsReleaseEverything: a silent upstream is cut after
// BodyTimeout (the client has had the head at once); clients that give up
// on a trickling upstream release their upstream connections, goroutines
// and descriptors.
func TestSlowUpstreamsReleaseEverything(t *testing.T) {
	stop := make(chan struct{})
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n")
		if path == "/silent/-/silent-1.tgz" {
			io.Copy(io.Discard, c) // until the edge gives up and closes
			return
		}
		for i := 0; ; i++ { // a byte every 100 ms: never idle for BodyTimeout
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	defer close(stop)
	e, _ := faultEdge(t, up, nil)
	// Silent: the head arrives, the body is cut after BodyTimeout.
	start := time.Now()
	resp, _, err := getRaw(t, e, "/silent/-/silent-1.tgz")
	if resp == nil || resp.StatusCode != 200 || err == nil {
		t.Fatalf("silent upstream: %v %v", resp, err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("a silent upstream held the request for %v", time.Since(start))
	}

	fds := func() int { ents, _ := os.ReadDir("/proc/self/fd"); return len(ents) }
	baseG, baseFD := runtime.NumGoroutine(), fds()
	const clients = 20
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
			if err != nil {
				t.Error(err)
				return
			}
			fmt.Fprintf(c, "GET /trickle/-/trickle-%d.tgz HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer %s\r\n\r\n", i, e.token(t, "0xa1b2c3d4"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("client %d: no head while the body trickles: %v", i, err)
			}
			c.Close() // gives up
		}(i)
	}
	wg.Wait()
	testutil.Eventually(t, 10*time.Second, "the upstream connections of abandoned requests closed", func() bool { return up.open.Load() == 0 })
	testutil.Eventually(t, 10*time.Second, "goroutines and descriptors back to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseG+2 && fds() <= baseFD+2
	})
}

// TestFullDiskStreamsThroughAndBlamesNobody: with the cache on a full
// disk (a small tmpfs), responses still reach clients whole, the write
// errors are counted, and the upstream's breaker does not move.
func TestFullDiskStreamsThroughAndBlamesNobody(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", dir).CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("mount tmpfs: %v %s", err, out))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	c, err := edgecache.Open(filepath.Join(dir, "cache"), 64<<20, edgecache.Options{Log: quiet}) // the bound is far above the disk
	if err != nil {
		t.Fatal(err)
	}
	big := npmfixture.Tarball(map[string]string{"data.bin": string(randomBytes(2 << 20))})
	up := newFaultUpstream(t, func(path string, conn net.Conn) {
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", len(big))
		conn.Write(big)
	})
	e := newEdge(t, func(cfg *Config) {
		cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
		cfg.Cache, cfg.PackumentTTL = c, time.Hour
		cfg.BreakerFailures, cfg.BreakerCooldown = 1, time.Hour // one failure would open it
	})
	for i := 0; i < 3; i++ {
		resp, b, err := getRaw(t, e, fmt.Sprintf("/big/-/big-1.0.%d.tgz", i))
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, big) {
			t.Fatalf("request %d on a full disk: %v %v, %d bytes", i, err, resp, len(b))
		}
	}
	if promtest.ToFloat64(c.WriteErrors) == 0 {
		t.Fatal("no write error counted on a full disk")
	}
	if st := e.proxy.routes[companyHash].br.state(); st != "closed" {
		t.Fatalf("the breaker is %s after disk errors", st)
	}
	if c.Len() != 0 {
		t.Fatalf("%d entries stored from a full disk", c.Len())
	}
	// The failed fills' temp files go (the last one is dropped as its
	// response ends, which the client may see first).
	testutil.Eventually(t, 5*time.Second, "no temp file left in the cache directory", func() bool {
		ents, _ := os.ReadDir(filepath.Join(dir, "cache"))
		for _, en := range ents {
			if strings.HasPrefix(en.Name(), ".tmp-") {
				return false
			}
		}
		return true
	})
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	x := uint64(88172645463325252)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// TestHalfOpenBreakerLetsWaitersThrough: while the one probe of a
// half-open breaker is out, other requests wait for its outcome (bounded)
// instead of failing at once; a good probe lets them all through.
func TestHalfOpenBreakerLetsWaitersThrough(t *testing.T) {
	onBothFrontEnds(t, testHalfOpenBreakerLetsWaitersThrough)
}

func testHalfOpenBreakerLetsWaitersThrough(t *testing.T, fe frontEnd) {
	var failing atomic.Bool
	failing.Store(true)
	release := make(chan struct{})
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		if failing.Load() {
			c.Close() // a connection failure
			return
		}
		if path == "/probe" {
			<-release
		}
		fmt.Fprintf(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	e := newEdgeOn(t, fe, func(cfg *Config) {
		cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
		cfg.BreakerFailures, cfg.BreakerCooldown = 1, time.Hour // ended by the test's clock
		cfg.RetryRatio = -1
	})
	br := e.proxy.routes[companyHash].br
	clock := testutil.NewClock(time.Now())
	br.now = clock.Now
	getRaw(t, e, "/x") // fails: the breaker opens
	if st := br.state(); st != "open" {
		t.Fatalf("after a failure the breaker is %s, want open", st)
	}
	clock.Advance(time.Hour)
	if st := br.state(); st != "half-open" {
		t.Fatalf("after the cooldown the breaker is %s, want half-open", st)
	}
	failing.Store(false)
	probe := make(chan int, 1)
	go func() {
		resp, _, _ := getRaw(t, e, "/probe")
		probe <- resp.StatusCode
	}()
	testutil.Eventually(t, 3*time.Second, "the probe in flight", func() bool { br.mu.Lock(); defer br.mu.Unlock(); return br.probing })
	waiter := make(chan int, 1)
	go func() {
		resp, _, _ := getRaw(t, e, "/y")
		waiter <- resp.StatusCode
	}()
	close(release)
	if code := <-probe; code != 204 {
		t.Fatalf("probe: %d", code)
	}
	if code := <-waiter; code != 204 {
		t.Fatalf("a request during the probe: %d, want it to wait for the probe and go through", code)
	}
}

// TestProbeClosesAHalfOpenBreaker: an open breaker asks for no probe; at
// the end of its cooldown it does, and the proxy's own probe (no client)
// reaching the upstream closes it, one failing opens it again. The
// cooldown runs on the test's clock.
func TestProbeClosesAHalfOpenBreaker(t *testing.T) {
	var failing atomic.Bool
	var pings atomic.Int32
	failing.Store(true)
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		if failing.Load() {
			c.Close()
			return
		}
		if path == "/-/ping" {
			pings.Add(1)
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
	})
	e := newEdge(t, func(cfg *Config) {
		cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}}
		cfg.BreakerFailures, cfg.BreakerCooldown = 1, time.Hour
		cfg.RetryRatio = -1
	})
	r := e.proxy.routes[companyHash]
	clock := testutil.NewClock(time.Now())
	r.br.now = clock.Now
	getRaw(t, e, "/x") // fails: the breaker opens
	if e.proxy.probeDue(r, 0) {
		t.Fatal("a probe is due while the breaker is open")
	}
	clock.Advance(time.Hour)
	if !e.proxy.probeDue(r, 0) {
		t.Fatalf("no probe due with the breaker %s", r.br.state())
	}
	e.proxy.probe(context.Background(), r) // the upstream still hangs up
	if st := r.br.state(); st != "open" {
		t.Fatalf("after a failed probe the breaker is %s, want open", st)
	}
	clock.Advance(time.Hour)
	failing.Store(false)
	e.proxy.probe(context.Background(), r)
	if st := r.br.state(); st != "closed" || pings.Load() != 1 {
		t.Fatalf("after a good probe the breaker is %s (%d pings), want closed", st, pings.Load())
	}
}

// TestDrainingResponsesSayConnectionClose: a response finished while the
// server shuts down tells the kept-alive client the connection closes.
func TestDrainingResponsesSayConnectionClose(t *testing.T) {
	onBothFrontEnds(t, testDrainingResponsesSayConnectionClose)
}

func testDrainingResponsesSayConnectionClose(t *testing.T, fe frontEnd) {
	release := make(chan struct{})
	up := newFaultUpstream(t, func(path string, c net.Conn) {
		<-release
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
	})
	e := newEdgeOn(t, fe, func(cfg *Config) { cfg.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}} })
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, e.URL+"/slow", nil)
		req.Header.Set("Authorization", "Bearer "+e.token(t, "0xa1b2c3d4"))
		resp, err := http.DefaultClient.Do(req)
		done <- result{resp, err}
	}()
	testutil.Eventually(t, 3*time.Second, "the request upstream", func() bool { return up.requests.Load() == 1 })
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- e.shutdown(ctx)
	}()
	if fe == fastFront {
		testutil.Eventually(t, 3*time.Second, "draining", func() bool { return e.proxy.draining.Load() })
	} else {
		// net/http's Shutdown closes the listener first; the proxy's
		// draining flag is the fast front end's alone.
		testutil.Eventually(t, 3*time.Second, "the listener closed", func() bool {
			c, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
			if err == nil {
				c.Close()
			}
			return err != nil
		})
	}
	close(release)
	r := <-done
	if r.err != nil || r.resp.StatusCode != 200 || !r.resp.Close {
		t.Fatalf("in-flight response during shutdown: %v %+v", r.err, r.resp)
	}
	if err := <-shut; err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("shutdown: %v", err)
	}
}
