package userproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/regedge/regedge/internal/edgecache"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
)

var sinkResult string

// BenchmarkToken compares a cold Ed25519 verification with a hit in the
// verified-token cache, for the same token, in the same run.
//
//	go test ./internal/userproxy -run '^$' -bench BenchmarkToken -count 6
func BenchmarkToken(b *testing.B) {
	e := newEdge(b, nil)
	tok, _ := token.Issue(e.key, "edge", token.Claims{RegistryHash: "0xa1b2c3d4", RegisteredClaims: jwt.RegisteredClaims{
		Subject: "@mycompany", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}})
	b.Run("cold-verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.proxy.tokens = newTokenCache(10000) // empty: every check verifies
			_, sinkResult = e.proxy.checkToken(tok, companyHash)
		}
	})
	b.Run("cache-hit", func(b *testing.B) {
		e.proxy.checkToken(tok, companyHash)
		b.ReportAllocs()
		for b.Loop() {
			_, sinkResult = e.proxy.checkToken(tok, companyHash)
		}
		if sinkResult != "cached" {
			b.Fatalf("result %s", sinkResult)
		}
	})
}

// BenchmarkTarball serves one tarball through the edge, from the edge cache
// and fetched through the upstream (no cache), in the same run.
//
//	go test ./internal/userproxy -run '^$' -bench BenchmarkTarball -count 6
func BenchmarkTarball(b *testing.B) {
	for _, cached := range []bool{true, false} {
		name := "upstream"
		if cached {
			name = "cache"
		}
		b.Run(name, func(b *testing.B) {
			c, _ := edgecache.Open(b.TempDir(), 1<<24, edgecache.Options{})
			e := newEdge(b, func(cfg *Config) {
				cfg.Tokens = nil
				cfg.PerMinute = 1 << 30
				if cached {
					cfg.Cache, cfg.PackumentTTL = c, time.Hour
				}
			})
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			get := func() {
				resp, err := client.Get(e.URL + tarballPath)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			get() // fill the cache
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get()
				}
			})
		})
	}
}

// BenchmarkFrontEnd: one proxied GET (token from the cache, config headers,
// 5 KB streamed body) through the fast path and, as the baseline, through
// the same Proxy behind a plain net/http server, in the same run; plain and
// over TLS (HTTP/1.1). The clients are raw keep-alive connections, the
// origin a net/http server, all in this process and on loopback.
// net/http-unwrapped is the net/http front end with a transport whose
// upstream connections are not wrapped (framing.go), the wrapper's baseline.
//
//	go test ./internal/userproxy -run '^$' -bench BenchmarkFrontEnd -count 6
func BenchmarkFrontEnd(b *testing.B) {
	payload := strings.Repeat("x", 5000)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		io.WriteString(w, payload)
	}))
	defer origin.Close()
	certFile, keyFile := testutil.SelfSignedCert(b, b.TempDir(), "edge")
	certs, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(certFile)
	roots.AppendCertsFromPEM(pemBytes)
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "edge.test", NextProtos: []string{"http/1.1"}}
	for _, front := range []string{"fast", "net/http", "net/http-unwrapped", "fast+tls", "net/http+tls"} {
		b.Run(front, func(b *testing.B) {
			e := newEdge(b, func(c *Config) {
				c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(origin.URL)}}
				c.PerMinute = 1 << 30
				if front == "net/http-unwrapped" {
					// The baseline of the upstream connection wrapper
					// (framing.go): the same transport without it.
					c.Transport = &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
						ResponseHeaderTimeout: 2 * time.Second, ForceAttemptHTTP2: true}
				}
			})
			addr := strings.TrimPrefix(e.URL, "http://")
			switch front {
			case "net/http", "net/http-unwrapped", "net/http+tls":
				srv := httptest.NewUnstartedServer(e.proxy)
				if front == "net/http+tls" {
					srv.TLS = certs.TLSConfig()
					srv.StartTLS()
				} else {
					srv.Start()
				}
				defer srv.Close()
				addr = srv.Listener.Addr().String()
			case "fast+tls":
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				srv := &Server{Proxy: e.proxy, Fallback: &http.Server{Handler: e.proxy}, TLSConfig: certs.TLSConfig()}
				go srv.Serve(ln)
				defer srv.Shutdown(context.Background())
				addr = ln.Addr().String()
			}
			req := []byte("GET /left-pad HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + e.token(b, "0xa1b2c3d4") + "\r\n\r\n")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var c net.Conn
				var err error
				if strings.HasSuffix(front, "+tls") {
					c, err = tls.Dial("tcp", addr, clientTLS)
				} else {
					c, err = net.Dial("tcp", addr)
				}
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || n != int64(len(payload)) {
						b.Errorf("%d, %d bytes", resp.StatusCode, n)
						return
					}
				}
			})
		})
	}
}

// BenchmarkAccessLine: one access line through slog's JSONHandler (the
// baseline) and through the proxy's encoder, both to io.Discard.
//
//	go test ./internal/userproxy -run '^$' -bench BenchmarkAccessLine -count 6
func BenchmarkAccessLine(b *testing.B) {
	r := &accessRecord{id: "0123456789abcdef", hash: "0xa1b2c3d4", method: "GET", path: "/@scope%2fname", status: 200,
		bytes: 5000, took: 1234567, upstream: "registry.example:443", token: "cached"}
	for _, name := range []string{"slog", "encoder"} {
		b.Run(name, func(b *testing.B) {
			p := &Proxy{log: slog.New(slog.NewJSONHandler(io.Discard, nil))}
			if name == "encoder" {
				p.cfg.AccessLog = io.Discard
			}
			b.ReportAllocs()
			for b.Loop() {
				p.logAccess(r)
			}
		})
	}
}

// BenchmarkUpstreamTLS: a GET through the fast path to an upstream over
// TLS (as registries are, on 443), the body streamed (no cache), with the
// upstream's TLS read record by record (recordConn, so stray records stay
// visible to the reuse check) and, as the baseline in the same run, with
// the TLS layer reading the socket as it likes. 5 KB and 1 MiB bodies.
//
//	go test ./internal/userproxy -run '^$' -bench BenchmarkUpstreamTLS -count 6
func BenchmarkUpstreamTLS(b *testing.B) {
	for _, size := range []int{5000, 1 << 20} {
		body := bytes.Repeat([]byte("x"), size)
		origin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		}))
		defer origin.Close()
		roots := x509.NewCertPool()
		roots.AddCert(origin.Certificate())
		for _, reads := range []string{"records", "whole"} {
			b.Run(fmt.Sprintf("%dB/%s", size, reads), func(b *testing.B) {
				wholeReadsTLS = reads == "whole"
				defer func() { wholeReadsTLS = false }()
				e := newEdge(b, func(c *Config) {
					c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(origin.URL)}}
					c.RootCAs = roots
					c.Tokens = nil
					c.PerMinute = 1 << 30
				})
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						resp, err := client.Get(e.URL + tarballPath)
						if err != nil {
							b.Error(err)
							return
						}
						n, _ := io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 || n != int64(size) {
							b.Errorf("%d, %d bytes", resp.StatusCode, n)
							return
						}
					}
				})
			})
		}
	}
}
