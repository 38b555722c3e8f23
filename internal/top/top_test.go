package top

import (
	"fmt"
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
