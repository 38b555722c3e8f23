package top

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

const sample = `# TYPE regedge_bpf_mode gauge
regedge_bpf_mode{mode="kernel"} 1
regedge_bpf_mode{mode="userspace"} 0
# TYPE regedge_ws_clients gauge
regedge_ws_clients 3
# TYPE regedge_registry_packets_total counter
regedge_registry_packets_total{direction="ingress",registry_hash="0xa1b2c3d4"} %d
regedge_registry_packets_total{direction="egress",registry_hash="0xa1b2c3d4"} %d
# TYPE regedge_registry_bytes_total counter
regedge_registry_bytes_total{direction="ingress",registry_hash="0xa1b2c3d4"} %d
# TYPE regedge_proxy_requests_total counter
regedge_proxy_requests_total{code="200",method="GET",registry_hash="0xa1b2c3d4"} %d
regedge_proxy_requests_total{code="200",method="GET",registry_hash="0x00000000"} 7
# TYPE regedge_kernel_drops_total counter
regedge_kernel_drops_total{hook="xdp",reason="checksum"} %d
regedge_kernel_drops_total{hook="xdp",reason="source"} 0
# TYPE regedge_token_verifications_total counter
regedge_token_verifications_total{result="cached"} %d
regedge_token_verifications_total{result="signature"} 1
# TYPE regedge_cache_hits_total counter
regedge_cache_hits_total 90
# TYPE regedge_cache_misses_total counter
regedge_cache_misses_total 10
`

func snap(t *testing.T, k int, at time.Time) Snapshot {
	t.Helper()
	s, err := Parse(strings.NewReader(fmtSample(k)), at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fmtSample(k int) string {
	return sprintf(sample, 100*k, 50*k, 10000*k, 20*k, 5*k, 30*k)
}

func TestParse(t *testing.T) {
	s := snap(t, 1, time.Now())
	if s.Mode != "kernel" || s.WSClients != 3 || s.Registries["0xa1b2c3d4"].Packets != 150 ||
		s.Registries["0x00000000"].Requests != 7 || s.Drops["checksum"] != 5 || s.Tokens["cached"] != 30 || s.CacheHits != 90 {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestRenderAtTwoSizes(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	prev, cur := snap(t, 1, t0), snap(t, 3, t0.Add(2*time.Second))
	for _, size := range [][2]int{{80, 24}, {120, 40}} {
		out := Render(prev, cur, size[0], size[1])
		lines := strings.Split(out, "\n")
		if len(lines) > size[1] {
			t.Errorf("%dx%d: %d lines", size[0], size[1], len(lines))
		}
		for _, l := range lines {
			if len([]rune(l)) > size[0] {
				t.Errorf("%dx%d: line of %d: %q", size[0], size[1], len([]rune(l)), l)
			}
		}
		// (3-1)*150 packets over 2 s = 150/s; bytes (3-1)*10000/2 = 10k/s; requests 20/s.
		for _, want := range []string{"bpf kernel", "websocket clients 3", "cache hit rate 90%", "0xa1b2c3d4", "150.0", "10.0k", "20.0", "checksum 5.0", "cached 30.0"} {
			if !strings.Contains(out, want) {
				t.Errorf("%dx%d: no %q in\n%s", size[0], size[1], want, out)
			}
		}
	}
	// A terminal too small still gets a well-formed, clipped view.
	if out := Render(prev, cur, 30, 5); len(strings.Split(out, "\n")) > 5 {
		t.Errorf("30x5:\n%s", out)
	}
	// The first snapshot has no rates yet.
	if out := Render(Snapshot{}, cur, 80, 24); !strings.Contains(out, " -") {
		t.Errorf("first view:\n%s", out)
	}
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }

// userspaceSample: an agent in userspace mode, without a cache, whose
// 0xa1b2c3d4 registry answers only 502s (half the edge's, breaker open,
// half the upstream's), with latencies, and one upstream up.
const userspaceSample = `# TYPE regedge_bpf_mode gauge
regedge_bpf_mode{mode="kernel"} 0
regedge_bpf_mode{mode="userspace"} 1
# TYPE regedge_proxy_requests_total counter
regedge_proxy_requests_total{answered_by="edge",code="502",method="GET",registry_hash="0xa1b2c3d4"} %d
regedge_proxy_requests_total{answered_by="upstream",code="502",method="GET",registry_hash="0xa1b2c3d4"} %d
regedge_proxy_requests_total{answered_by="upstream",code="200",method="GET",registry_hash="0x00000000"} %d
regedge_proxy_requests_total{answered_by="cache",code="304",method="GET",registry_hash="0x00000000"} %d
# TYPE regedge_proxy_request_duration_seconds histogram
regedge_proxy_request_duration_seconds_bucket{registry_hash="0x00000000",le="0.001"} %d
regedge_proxy_request_duration_seconds_bucket{registry_hash="0x00000000",le="0.01"} %d
regedge_proxy_request_duration_seconds_bucket{registry_hash="0x00000000",le="0.1"} %d
regedge_proxy_request_duration_seconds_bucket{registry_hash="0x00000000",le="+Inf"} %d
regedge_proxy_request_duration_seconds_sum{registry_hash="0x00000000"} 1
regedge_proxy_request_duration_seconds_count{registry_hash="0x00000000"} %d
# TYPE regedge_upstream_up gauge
regedge_upstream_up{upstream="registry.npmjs.org:443"} 1
regedge_upstream_up{upstream="10.0.0.5:4873"} 0
# TYPE regedge_upstream_breaker_open gauge
regedge_upstream_breaker_open{upstream="registry.npmjs.org:443"} 0
regedge_upstream_breaker_open{upstream="10.0.0.5:4873"} 1
`

func userspaceSnap(t *testing.T, k int, at time.Time) Snapshot {
	t.Helper()
	// Per k: 10 edge 502s, 10 upstream 502s, 100 200s, 20 304s; the 120
	// requests of 0x00000000: 60 under 1 ms, 114 under 10 ms, all under 100 ms.
	s, err := Parse(strings.NewReader(sprintf(userspaceSample, 10*k, 10*k, 100*k, 20*k, 60*k, 114*k, 120*k, 120*k, 120*k)), at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRenderStatusLatencyUpstreams: an all-502 registry shows as such
// (the edge's and the upstream's apart), percentiles come from the
// histogram's buckets over the interval, upstream states are named, and
// what does not apply says n/a.
func TestRenderStatusLatencyUpstreams(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	prev, cur := userspaceSnap(t, 1, t0), userspaceSnap(t, 2, t0.Add(time.Second))
	out := Render(prev, cur, 100, 40)
	var bad, good string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "0xa1b2c3d4") {
			bad = l
		}
		if strings.HasPrefix(l, "0x00000000") {
			good = l
		}
	}
	// 0xa1b2c3d4: 20 req/s, all 5xx: 10 the edge's, 10 the upstream's.
	if f := strings.Fields(bad); len(f) != 10 || f[1] != "n/a" || f[3] != "20.0" || f[4] != "0.0" || f[7] != "10.0/10.0" {
		t.Errorf("all-502 registry: %q", bad)
	}
	// 0x00000000: 120 req/s, 100 2xx, 20 3xx; p50 (rank 60) at the 1 ms
	// bound; p99 (rank 118.8) inside (10 ms, 100 ms]: 10 + 90 *
	// (118.8-114)/(120-114) = 82 ms.
	if f := strings.Fields(good); len(f) != 10 || f[3] != "120.0" || f[4] != "100.0" || f[5] != "20.0" || f[8] != "1.0ms" || f[9] != "82ms" {
		t.Errorf("healthy registry: %q\n%s", good, out)
	}
	for _, want := range []string{"cache hit rate n/a", "10.0.0.5:4873", "BREAKER OPEN", "registry.npmjs.org:443", "DROPS/S    n/a"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

func TestQuantileAsPrometheus(t *testing.T) {
	h := func(counts ...float64) Histogram {
		return Histogram{Bounds: []float64{0.1, 0.2, 0.4, math.Inf(1)}, Counts: counts}
	}
	for _, tc := range []struct {
		q         float64
		prev, cur Histogram
		want      float64
		ok        bool
	}{
		{0.5, h(0, 0, 0, 0), h(10, 20, 30, 40), 0.2, true},         // rank 20: the top of the second bucket
		{0.25, h(0, 0, 0, 0), h(10, 20, 30, 40), 0.1, true},        // rank 10
		{0.99, h(0, 0, 0, 0), h(10, 20, 30, 40), 0.4, true},        // in +Inf: the largest finite bound
		{0.5, h(10, 20, 30, 40), h(10, 20, 30, 40), 0, false},      // nothing in between
		{0.5, h(10, 20, 30, 40), h(10, 30, 30, 40+10), 0.15, true}, // 10 new, all in (0.1, 0.2]: rank 5 halfway
	} {
		got, ok := quantile(tc.q, tc.prev, tc.cur)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("q%.2f: %v %v, want %v %v", tc.q, got, ok, tc.want, tc.ok)
		}
	}
}
