package userproxy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
)

// accessLine is the part of an access line these tests read.
type accessLine struct {
	Path       string `json:"path"`
	Method     string `json:"method"`
	Status     int    `json:"status"`
	Client     string `json:"client"`
	AnsweredBy string `json:"answered_by"`
	Cache      string `json:"cache"`
	Reason     string `json:"reason"`
}

func parseLines(t *testing.T, lines []string) []accessLine {
	t.Helper()
	var out []accessLine
	for _, l := range lines {
		if l == "" {
			continue
		}
		var a accessLine
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		out = append(out, a)
	}
	return out
}

// TestEdgeAnswersAreToldFromUpstreamAnswers: the upstream's own 502 and
// the edge's 502 (upstream unreachable) land under different answered_by
// labels, and the access line says why the edge answered itself.
func TestEdgeAnswersAreToldFromUpstreamAnswers(t *testing.T) {
	onBothFrontEnds(t, testEdgeAnswersAreToldFromUpstreamAnswers)
}

func testEdgeAnswersAreToldFromUpstreamAnswers(t *testing.T, fe frontEnd) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			http.Error(w, "upstream says bad gateway", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte("ok"))
	}))
	defer up.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String()
	ln.Close()
	out := &lockedBuffer{}
	e := newEdgeOn(t, fe, func(c *Config) {
		c.Upstreams = []Upstream{{Hash: companyHash, URL: mustURL(up.URL)}, {Hash: otherHash, URL: mustURL(down)}}
		c.AccessLog = out
		c.BreakerFailures = -1
	})
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4", "0x0000beef")}
	if resp, _ := e.get(t, "/bad", auth); resp.StatusCode != 502 {
		t.Fatalf("upstream's 502: %d", resp.StatusCode)
	}
	downAuth := map[string]string{"Authorization": auth["Authorization"], "X-Bun-Registry-Hash": "0x0000beef"}
	if resp, _ := e.get(t, "/x", downAuth); resp.StatusCode != 502 {
		t.Fatalf("edge's 502: %d", resp.StatusCode)
	}
	if resp, _ := e.get(t, "/x", nil); resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	// The net/http front end (a body) says the same.
	req, _ := http.NewRequest(http.MethodPut, e.URL+"/x", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+e.tokenFor(t, "@mycompany", token.ScopeRegistryWrite, "0xa1b2c3d4", "0x0000beef")) // a write needs registry:write
	req.Header.Set("X-Bun-Registry-Hash", "0x0000beef")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	lines := parseLines(t, out.waitLines(t, 4))
	want := []accessLine{
		{Path: "/bad", Method: "GET", Status: 502, Client: "127.0.0.1", AnsweredBy: "upstream"},
		{Path: "/x", Method: "GET", Status: 502, Client: "127.0.0.1", AnsweredBy: "edge", Reason: "upstream_unreachable"},
		{Path: "/x", Method: "GET", Status: 401, Client: "127.0.0.1", AnsweredBy: "edge", Reason: "token:missing"},
		{Path: "/x", Method: "PUT", Status: 502, Client: "127.0.0.1", AnsweredBy: "edge", Reason: "upstream_unreachable"},
	}
	// A line is written once its answer is sent, so two requests in a
	// row may log in either order: compare them as a set.
	byKey := func(l []accessLine) {
		slices.SortFunc(l, func(a, b accessLine) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	}
	byKey(lines)
	byKey(want)
	if !slices.Equal(lines, want) {
		t.Errorf("lines\n%+v\nwant\n%+v", lines, want)
	}
	for _, tc := range []struct {
		hash, method, code, by string
		n                      float64
	}{
		{"0xa1b2c3d4", "GET", "502", "upstream", 1},
		{"0x0000beef", "GET", "502", "edge", 1},
		{"0x0000beef", "PUT", "502", "edge", 1},
		{"0xa1b2c3d4", "GET", "401", "edge", 1},
		{"0xa1b2c3d4", "GET", "502", "edge", 0},
	} {
		if got := promtest.ToFloat64(e.proxy.requests.WithLabelValues(tc.hash, tc.method, tc.code, tc.by)); got != tc.n {
			t.Errorf("requests{%s %s %s %s} = %v, want %v", tc.hash, tc.method, tc.code, tc.by, got, tc.n)
		}
	}
}

// TestCacheStatusInTheAccessLine: a miss is answered by the upstream (and
// says miss), the next request by the cache (hit); a path the cache never
// keeps says bypass. The net/http front end has no edge cache
// (docs/proxy.md): every answer is the upstream's, with no cache status in
// the header or the line.
func TestCacheStatusInTheAccessLine(t *testing.T) { onBothFrontEnds(t, testCacheStatusInTheAccessLine) }

func testCacheStatusInTheAccessLine(t *testing.T, fe frontEnd) {
	out := &lockedBuffer{}
	e, _ := cachedEdgeOn(t, fe, 1<<20, func(c *Config) { c.AccessLog = out })
	auth := map[string]string{"Authorization": "Bearer " + e.token(t, "0xa1b2c3d4")}
	var headers []string
	for _, p := range []string{tarballPath, tarballPath, "/-/whoami"} {
		resp, _ := e.get(t, p, auth)
		headers = append(headers, resp.Header.Get("X-Regedge-Cache"))
	}
	want := []struct{ cache, by string }{{"miss", "upstream"}, {"hit", "cache"}, {"bypass", "upstream"}}
	if fe == netHTTPFront {
		want = []struct{ cache, by string }{{"", "upstream"}, {"", "upstream"}, {"", "upstream"}}
	}
	lines := parseLines(t, out.waitLines(t, 3))
	if len(lines) != len(want) {
		t.Fatalf("lines %+v", lines)
	}
	for i, w := range want {
		if lines[i].Cache != w.cache || lines[i].AnsweredBy != w.by || headers[i] != w.cache {
			t.Errorf("request %d: line %+v, X-Regedge-Cache %q; want cache %q answered by %s", i, lines[i], headers[i], w.cache, w.by)
		}
	}
}

// TestAccessSampling: log.access sample:3 writes one line in three, off
// writes none; the metrics count every request either way.
func TestAccessSampling(t *testing.T) { onBothFrontEnds(t, testAccessSampling) }

func testAccessSampling(t *testing.T, fe frontEnd) {
	for _, tc := range []struct {
		sample, lines int
	}{{3, 3}, {-1, 0}, {1, 9}} {
		out := &lockedBuffer{}
		e := newEdgeOn(t, fe, func(c *Config) { c.AccessLog, c.AccessSample = out, tc.sample })
		for i := 0; i < 9; i++ {
			e.get(t, "/hello-dep", nil) // 401: answered at once
		}
		if tc.lines > 0 {
			out.waitLines(t, tc.lines)
		}
		// The fast path counts a request after its response went out:
		// wait for the ninth.
		testutil.Eventually(t, 5*time.Second, "nine requests counted", func() bool {
			return promtest.ToFloat64(e.proxy.requests.WithLabelValues("0xa1b2c3d4", "GET", "401", "edge")) == 9
		})
		got := len(parseLines(t, out.lines()))
		if got != tc.lines || promtest.ToFloat64(e.proxy.requests.WithLabelValues("0xa1b2c3d4", "GET", "401", "edge")) != 9 {
			t.Errorf("sample %d: %d lines, want %d; requests counted %v", tc.sample, got, tc.lines,
				promtest.ToFloat64(e.proxy.requests.WithLabelValues("0xa1b2c3d4", "GET", "401", "edge")))
		}
	}
}

// TestSelfProbeOnBothFrontEnds: the readiness probe's path is answered by
// the proxy itself, without a token, neither counted nor logged (a GET and,
// on the fast front end handed on to net/http, a request with a body).
func TestSelfProbeOnBothFrontEnds(t *testing.T) { onBothFrontEnds(t, testSelfProbe) }

func testSelfProbe(t *testing.T, fe frontEnd) {
	out := &lockedBuffer{}
	e := newEdgeOn(t, fe, func(c *Config) { c.AccessLog = out })
	if resp, body := e.get(t, SelfProbePath, nil); resp.StatusCode != 200 || body != "{\"ok\":true}\n" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, e.URL+SelfProbePath, strings.NewReader("x"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST with a body: %d", resp.StatusCode)
	}
	e.get(t, "/hello-dep", nil) // one request that is counted and logged
	if lines := parseLines(t, out.waitLines(t, 1)); len(lines) != 1 || lines[0].Path != "/hello-dep" {
		t.Fatalf("lines: %+v", lines)
	}
}
