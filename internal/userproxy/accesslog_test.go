package userproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// slogLine is the line slog's JSONHandler writes for r at t.
func slogLine(t testing.TB, at time.Time, r *accessRecord) []byte {
	var buf bytes.Buffer
	rec := slog.NewRecord(at, slog.LevelInfo, "request", 0)
	rec.AddAttrs(slog.String("id", r.id), slog.String("registry_hash", r.hash), slog.String("method", r.method),
		slog.String("path", r.path), slog.Int("status", r.status), slog.Int64("bytes", r.bytes),
		slog.Float64("duration_ms", float64(r.took.Microseconds())/1000),
		slog.String("upstream", r.upstream), slog.String("token", r.token),
		slog.String("client", clientString(r.client)), slog.String("answered_by", r.answeredBy),
		slog.String("cache", r.cache), slog.String("reason", r.reason))
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestAccessLineIsSlogsLine(t *testing.T) {
	at := time.Date(2026, 11, 26, 23, 30, 1, 234567891, time.FixedZone("x", 3600))
	for _, path := range []string{
		"/left-pad", "/@scope%2fname", `/a"b\c`, "/<script>&amp;", "/tab\there\nnl\r\x00\x1f\x7f",
		"/caf\u00e9/\u2028\u2029/\U0001F600", "/bad\xffutf8\xc3", "",
	} {
		for i, took := range []time.Duration{0, 1234567 * time.Nanosecond, 3 * time.Second, 17 * time.Microsecond, 100 * time.Hour} {
			clients := []netip.Addr{{}, netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::1"),
				netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("fe80::1%a\"b\\c")}
			r := &accessRecord{id: "0123456789abcdef", hash: "0xa1b2c3d4", method: "GET", path: path, status: 200, bytes: 5000,
				took: took, upstream: "registry.example:443", token: "cached", client: clients[i%len(clients)],
				answeredBy: "cache", cache: "hit", reason: path}
			got, want := appendAccessLine(nil, at, r), slogLine(t, at, r)
			if !bytes.Equal(got, want) {
				t.Errorf("path %q took %v:\n got %s\nwant %s", path, took, got, want)
			}
		}
	}
}

func FuzzAccessLine(f *testing.F) {
	f.Add("/left-pad", "GET", int64(5000), int64(123456))
	f.Add("/\u2028<\xff", "HEAD", int64(-1), int64(0))
	f.Add("/x", "fe80::1%eth\"0", int64(1), int64(1))
	f.Fuzz(func(t *testing.T, path, method string, n, took int64) {
		at := time.Unix(1764200000, 123456789).UTC()
		client, _ := netip.ParseAddr(method)
		r := &accessRecord{id: "id", hash: "other", method: method, path: path, status: 502, bytes: n, took: time.Duration(took), upstream: "u", token: "",
			client: client, answeredBy: "edge", reason: path}
		if got, want := appendAccessLine(nil, at, r), slogLine(t, at, r); !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}

// lockedBuffer is a bytes.Buffer safe for the proxy's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

// waitLines waits until n lines are written: the fast path writes a
// request's access line after its response went out.
func (l *lockedBuffer) waitLines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := l.lines()
		if len(lines) >= n && lines[0] != "" || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOneAccessLinePerRequest: both front ends write one JSON line per
// request with every field the operator guide lists, through the encoder
// (AccessLog set) and through the Logger (not set).
func TestOneAccessLinePerRequest(t *testing.T) { onBothFrontEnds(t, testOneAccessLinePerRequest) }

func testOneAccessLinePerRequest(t *testing.T, fe frontEnd) {
	for _, encoder := range []bool{true, false} {
		out := &lockedBuffer{}
		e := newEdgeOn(t, fe, func(c *Config) {
			if encoder {
				c.AccessLog = out
			}
		})
		e.proxy.log = slog.New(slog.NewJSONHandler(out, nil))
		auth := "Bearer " + e.tokenFor(t, "@mycompany", "registry:write", "0xa1b2c3d4") // the PUT is a write
		get, getBody := e.get(t, "/hello-dep", map[string]string{"Authorization": auth})
		req, _ := http.NewRequest(http.MethodPut, e.URL+"/hello-dep", strings.NewReader("{}"))
		req.Header.Set("Authorization", auth)
		put, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		put.Body.Close()
		lines := out.waitLines(t, 2)
		if len(lines) != 2 {
			t.Fatalf("encoder %v: %d lines: %q", encoder, len(lines), lines)
		}
		for i, resp := range []*http.Response{get, put} {
			var l struct {
				Time, Level, Msg, ID, RegistryHash, Method, Path, Upstream, Token string
				Client, AnsweredBy, Cache, Reason                                 *string
				Status                                                            int
				Bytes                                                             int64
				DurationMS                                                        *float64
			}
			var raw map[string]any
			if err := json.Unmarshal([]byte(lines[i]), &raw); err != nil {
				t.Fatalf("line %d is not JSON: %v: %s", i, err, lines[i])
			}
			json.Unmarshal([]byte(strings.NewReplacer(`"registry_hash"`, `"RegistryHash"`, `"duration_ms"`, `"DurationMS"`, `"answered_by"`, `"AnsweredBy"`).Replace(lines[i])), &l)
			if _, err := time.Parse(time.RFC3339Nano, l.Time); err != nil || l.Level != "INFO" || l.Msg != "request" ||
				l.ID != resp.Header.Get("X-Bun-Request-Id") || l.RegistryHash != "0xa1b2c3d4" || l.Method != resp.Request.Method ||
				l.Path != "/hello-dep" || l.Status != resp.StatusCode || l.DurationMS == nil || l.Upstream != strings.TrimPrefix(e.reg.URL, "http://") ||
				(l.Token != "ok" && l.Token != "cached") || len(raw) != 16 || (i == 0 && l.Bytes != int64(len(getBody))) ||
				l.Client == nil || *l.Client != "127.0.0.1" || l.AnsweredBy == nil || *l.AnsweredBy != "upstream" ||
				l.Cache == nil || *l.Cache != "" || l.Reason == nil || *l.Reason != "" {
				t.Errorf("encoder %v, line %d: %s (response %d %s)", encoder, i, lines[i], resp.StatusCode, resp.Header.Get("X-Bun-Request-Id"))
			}
		}
	}
	// A streamed body (a tarball, not rewritten) is counted as sent.
	out := &lockedBuffer{}
	e := newEdgeOn(t, fe, func(c *Config) { c.AccessLog = out })
	e.proxy.log = slog.New(slog.NewJSONHandler(out, nil))
	const tgz = "/hello-dep/-/hello-dep-1.0.0.tgz"
	if resp, b := e.get(t, tgz, map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}); resp.StatusCode != 200 || b != string(e.reg.TarballAt(tgz)) {
		t.Fatalf("tarball: %d", resp.StatusCode)
	}
	var l struct{ Bytes int64 }
	if err := json.Unmarshal([]byte(out.waitLines(t, 1)[0]), &l); err != nil || l.Bytes != int64(len(e.reg.TarballAt(tgz))) {
		t.Errorf("tarball line %s: bytes %d, want %d", out.lines()[0], l.Bytes, len(e.reg.TarballAt(tgz)))
	}
}
