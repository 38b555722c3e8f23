//go:build linux

package agent

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/loader/loadertest"
	"github.com/regedge/regedge/internal/testutil"
)

// TestMadeUpHashesDoNotFillKernelCounters: a client with no token and no
// business sends 300 requests on one keep-alive connection, each with a
// registry hash of its own making. The kernel's per-registry counters
// (registry_stats: 4096 entries, pinned, never emptied) must not get a key
// per made-up hash: filled, they have no room for a configured registry that
// is counted later, and that registry's traffic is then not counted at all,
// across restarts. The proxy tells the kernel one stand-in hash for every
// hash the config does not know, as the metrics fold them into "other".
func TestMadeUpHashesDoNotFillKernelCounters(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := loadertest.BPFFS(t)
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(upstream, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") }))
	defer upstream.Close()

	cfg := config.Default()
	cfg.Agent.Interfaces = []string{h.IfB}
	cfg.Agent.BPFFS = bpffs
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Proxy.Upstreams = []config.Upstream{{Host: "127.0.0.1", Port: upstream.Addr().(*net.TCPAddr).Port, Hash: 0xbeef}}
	a := kernelAgentIn(t, h.B, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), true)
	cancel, done := serveInBackground(a)
	defer func() {
		cancel()
		<-done
		testutil.In(t, h.B, func() { loader.Detach(bpffs, []string{h.IfB}) })
	}()

	const madeUp = 300
	testutil.In(t, h.A, func() {
		c, err := net.DialTimeout("tcp", "192.0.2.2:4873", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		br := bufio.NewReader(c)
		for i := range madeUp + 1 {
			hash := uint32(0x7000_0000 + i)
			if i == madeUp {
				hash = 0xbeef // the configured one, last
			}
			fmt.Fprintf(c, "GET /left-pad HTTP/1.1\r\nHost: 192.0.2.2:4873\r\nX-Bun-Registry-Hash: 0x%08x\r\n\r\n", hash)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	// The last response's egress is counted once its socket sends it.
	var keys map[uint32]bool
	testutil.Eventually(t, 5*time.Second, "the configured registry's response counted", func() bool {
		cs, err := a.dp.Objects.RegistryCounters()
		if err != nil {
			t.Fatal(err)
		}
		keys = map[uint32]bool{}
		beef := false
		for _, c := range cs {
			keys[c.Hash] = true
			beef = beef || (c.Hash == 0xbeef && c.Egress && c.Bytes > 0)
		}
		return beef
	})
	// 0xbeef and one stand-in for every hash the config does not know.
	if len(keys) > 2 {
		t.Errorf("the kernel counts %d registry hashes after %d made-up ones, want at most 2 (the configured one and one for the rest)", len(keys), madeUp)
	}
}
