//go:build linux

package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/loader/loadertest"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/vishvananda/netns"
)

// TestAgentAttachesKernelDatapath: with an interface configured and root,
// agent.bpf auto attaches XDP and TC, says so in /health and exports the
// kernel metrics; stopping the agent leaves the pins for the next one.
func TestAgentAttachesKernelDatapath(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := loadertest.BPFFS(t)

	cfg := config.Default()
	cfg.Agent.Interfaces = []string{h.IfB}
	cfg.Agent.BPFFS = bpffs
	cfg.Admin.Listen = "127.0.0.1:0"
	a := kernelAgentIn(t, h.B, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), true)
	var hl struct {
		BPF struct {
			Mode       string   `json:"mode"`
			Interfaces []string `json:"interfaces"`
		} `json:"bpf"`
	}
	if err := json.Unmarshal([]byte(scrape(t, a, "/health")), &hl); err != nil {
		t.Fatal(err)
	}
	if hl.BPF.Mode != "kernel" || len(hl.BPF.Interfaces) != 1 || hl.BPF.Interfaces[0] != h.IfB {
		t.Fatalf("/health bpf %+v", hl.BPF)
	}
	metrics := scrape(t, a, "/metrics")
	for _, want := range []string{`regedge_bpf_mode{mode="kernel"} 1`, `regedge_kernel_drops_total{hook="xdp",reason="checksum"} 0`, `regedge_kernel_packets_total{hook="tc",verdict="pass"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cancel, done := serveInBackground(a)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := loader.ReadStatus(bpffs)
	if err != nil || len(st.Links) != 4 || st.Links[0].Name != "sklookup-netns" {
		t.Fatalf("after stop: status %+v, %v; want the 4 pinned links (sk_lookup, agent.skLookup's default, among them)", st, err)
	}
	testutil.In(t, h.B, func() {
		if err := loader.Detach(bpffs, []string{h.IfB}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAgentAutoFallsBackAndRequiredFails(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := config.Default()
	cfg.Agent.Interfaces = []string{"rgnosuchif0"}
	cfg.Agent.BPFFS = loadertest.BPFFS(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if a.BPFMode() != "userspace" || !strings.Contains(a.BPFReason(), "rgnosuchif0") {
		t.Fatalf("auto: mode %s reason %q", a.BPFMode(), a.BPFReason())
	}
	if entries, _ := os.ReadDir(loader.PinRoot(cfg.Agent.BPFFS)); len(entries) != 0 {
		t.Fatalf("a failed attach left pins behind: %v", entries)
	}
	cfg.Agent.BPF = "required"
	if _, err := New(cfg, log); !errors.Is(err, ErrBPFRequired) || !strings.Contains(err.Error(), "rgnosuchif0") {
		t.Fatalf("required: %v", err)
	}
}

// TestProxyAccountsBySocket: through the real proxy (fast path), TC alone
// on the interface, one keep-alive connection fetches a 1 MiB tarball for
// one registry hash, then one for another: each hash's egress bytes are its
// own 1 MiB (and its headers), read from /metrics. A third fetch, for a hash
// the config does not know, is counted under registry_hash="other", as the
// proxy's own series label it: no series of its own.
func TestProxyAccountsBySocket(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := loadertest.BPFFS(t)
	// The upstream listens in the test's own namespace: the proxy's dials
	// run on goroutines that are not locked into B (in production the whole
	// agent lives in one namespace).
	const size = 1 << 20
	tarball := make([]byte, size)
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(upstream, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(tarball)
	}))
	defer upstream.Close()
	port := upstream.Addr().(*net.TCPAddr).Port

	cfg := config.Default()
	cfg.Agent.Interfaces = []string{h.IfB}
	cfg.Agent.BPFFS = bpffs
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Proxy.Upstreams = []config.Upstream{{Host: "127.0.0.1", Port: port, Hash: 0}}
	cfg.Proxy.Scopes = map[string]config.Hash{"@beef": 0xbeef, "@cafe": 0xcafe}
	a := kernelAgentIn(t, h.B, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), true)
	// TC alone: XDP on the receiving veth would linearise every skb.
	st, err := loader.ReadStatus(bpffs)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Links {
		if strings.HasPrefix(l.Name, "xdp-") {
			if err := os.Remove(st.Dir + "/links/" + l.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.dp.DropLink("xdp-" + h.IfB)
	cancel, done := serveInBackground(a)
	defer func() {
		cancel()
		<-done
		testutil.In(t, h.B, func() { loader.Detach(bpffs, []string{h.IfB}) })
	}()

	testutil.In(t, h.A, func() {
		c, err := net.DialTimeout("tcp", "192.0.2.2:4873", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		for _, hash := range []string{"0x0000beef", "0x0000cafe", "0x0000dead"} {
			io.WriteString(c, "GET /left-pad/-/left-pad-1.0.0.tgz HTTP/1.1\r\nHost: 192.0.2.2:4873\r\nX-Bun-Registry-Hash: "+hash+"\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != size || err != nil {
				t.Fatalf("%s: %d, %d bytes, %v", hash, resp.StatusCode, n, err)
			}
		}
	})
	// The proxy counts a request once its answer is written: the client can
	// have read the last byte first.
	const otherRequests = `regedge_proxy_requests_total{answered_by="upstream",code="200",method="GET",registry_hash="other"}`
	var page string
	testutil.Eventually(t, 5*time.Second, "the unknown hash's request counted", func() bool {
		page = scrape(t, a, "/metrics")
		return metricValue(page, otherRequests) != "absent"
	})
	if strings.Contains(page, "0x0000dead") {
		t.Errorf("/metrics has a series of the hash the config does not know:\n%s", page)
	}
	if v := metricValue(page, otherRequests); v != "1" {
		t.Errorf("the proxy's count of the unknown hash's request under \"other\": %q, want 1", v)
	}
	for _, hash := range []string{"0x0000beef", "0x0000cafe", "other"} {
		v := metricValue(page, `regedge_registry_bytes_total{direction="egress",registry_hash="`+hash+`"}`)
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < size || n > size*1.06+16<<10 {
			t.Errorf("%s egress bytes %s, want its own 1 MiB and headers", hash, v)
		}
	}
	if m := metricValue(page, "regedge_handoff_mismatch_total"); m != "0" {
		t.Errorf("hand-over failures: %s", m)
	}
}

// kernelAgentIn makes an agent inside namespace ns (and, with listen, opens
// its sockets there), and fails the test unless it runs the kernel
// datapath.
func kernelAgentIn(t *testing.T, ns netns.NsHandle, cfg *config.Config, log *slog.Logger, listen bool) *Agent {
	t.Helper()
	var a *Agent
	testutil.In(t, ns, func() {
		var err error
		if a, err = New(cfg, log); err != nil {
			t.Fatal(err)
		}
		if listen {
			if err := a.Listen(); err != nil {
				t.Fatal(err)
			}
		}
	})
	if a.BPFMode() != "kernel" {
		t.Fatalf("mode %s: %s", a.BPFMode(), a.BPFReason())
	}
	return a
}
