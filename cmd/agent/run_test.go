package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
)

// TestStalledLogReaderLeavesTheProxyServing: the agent's stderr is a pipe
// nobody reads. A thousand requests are answered all the same; the lines
// that did not fit are counted as dropped, and readiness and metrics
// still answer.
func TestStalledLogReaderLeavesTheProxyServing(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte("tarball bytes"))
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	port, _ := strconv.Atoi(u.Port())
	cfg := config.Default()
	cfg.Admin.Listen, cfg.Bus.Port, cfg.WebSocket.Port, cfg.Proxy.ListenPort = "127.0.0.1:0", 0, 0, 0
	cfg.Proxy.ListenHost = "127.0.0.1"
	cfg.Agent.BPF = "off"
	cfg.Proxy.Upstreams = []config.Upstream{{Host: u.Hostname(), Port: port, Hash: 0}}
	cfg.Proxy.RateLimit.PerMinute = 1 << 20

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // never read before the end
	defer w.Close()
	saved := logBuffer
	logBuffer = 16 << 10
	defer func() { logBuffer = saved }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *agent.Agent, 1)
	done := make(chan error, 1)
	go func() { done <- serveUntil(ctx, w, "", cfg, nil, agent.New, func(a *agent.Agent) { ready <- a }) }()
	var a *agent.Agent
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "agent ready", a.Ready)
	proxy := "http://" + a.ProxyAddr().String()
	client := &http.Client{Timeout: 10 * time.Second}

	const n = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	jobs := make(chan int)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				resp, err := client.Get(fmt.Sprintf("%s/pkg-%d/-/pkg-%d-1.0.0.tgz", proxy, i, i))
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && string(b) == "tarball bytes" {
					mu.Lock()
					answered++
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if answered != n {
		t.Fatalf("%d of %d requests answered with the log reader stalled", answered, n)
	}
	admin := "http://" + a.AdminAddr().String()
	resp, err := client.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	dropped := metricLine(string(page), "regedge_log_dropped_total")
	if v, err := strconv.ParseFloat(dropped, 64); err != nil || v == 0 {
		t.Fatalf("regedge_log_dropped_total %q after %d access lines into a stalled pipe", dropped, n)
	}
	if resp, err := client.Get(admin + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz: %v %v", resp, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop with its log reader stalled")
	}
}

// metricLine is the value of the first sample of name in a metrics page.
func metricLine(page, name string) string {
	for _, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			return l[strings.LastIndex(l, " ")+1:]
		}
	}
	return ""
}
