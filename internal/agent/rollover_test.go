//go:build linux

package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/loader/loadertest"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/vethpair"
)

// sumMetric adds up every series of a metric on a /metrics page.
func sumMetric(page, name string) float64 {
	var n float64
	for _, line := range strings.Split(page, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, " ")) {
			f := strings.Fields(rest)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				n += v
			}
		}
	}
	return n
}

// rolloverClient opens a new connection to the proxy every few
// milliseconds, sends one request and reads the answer, until stopped; it
// counts what succeeded and keeps every failure.
type rolloverClient struct {
	mu       sync.Mutex
	ok       int
	failures []error
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// halt stops the client and waits for its last connection.
func (c *rolloverClient) halt() {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
}

func startRolloverClient(t *testing.T, h *testutil.Hosts) *rolloverClient {
	c := &rolloverClient{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			err := c.once(t, h)
			c.mu.Lock()
			if err != nil {
				c.failures = append(c.failures, err)
			} else {
				c.ok++
			}
			c.mu.Unlock()
			time.Sleep(3 * time.Millisecond) // the pace of new connections
		}
	}()
	return c
}

func (c *rolloverClient) once(t *testing.T, h *testutil.Hosts) (err error) {
	var conn net.Conn
	if nsErr := vethpair.In(h.A, func() {
		conn, err = net.DialTimeout("tcp", "192.0.2.2:4873", 5*time.Second)
	}); nsErr != nil {
		return nsErr
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /left-pad HTTP/1.1\r\nHost: 192.0.2.2:4873\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return errors.New(resp.Status)
	}
	return nil
}

func (c *rolloverClient) successes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok
}

// waitSuccesses waits until the client has n more successes than now.
func (c *rolloverClient) waitSuccesses(t *testing.T, n int) {
	t.Helper()
	target := c.successes() + n
	deadline := time.Now().Add(20 * time.Second)
	for c.successes() < target {
		if time.Now().After(deadline) {
			t.Fatalf("the client got only %d of %d answers", c.successes(), target)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRolloverRefusesNothing is a DaemonSet rollout with maxSurge 1 in two
// namespaces: a second agent starts while the first runs (same ports, same
// pins), takes the programs and the steered sockets over, and the first,
// told to stop, drains and exits. A client opening a new connection every
// few milliseconds across the whole replacement sees no refused or reset
// connection, and both agents served some of them. In the second case the
// first is told to stop after the second has opened the datapath but before
// it serves (an orchestrator that took the first's /readyz for the
// second's): the first waits for the second's sockets.
func TestRolloverRefusesNothing(t *testing.T) {
	for _, early := range []bool{false, true} {
		name := "stop-after-ready"
		if early {
			name = "stop-before-the-next-serves"
		}
		t.Run(name, func(t *testing.T) { rollover(t, early) })
	}
}

func rollover(t *testing.T, stopEarly bool) {
	h := testutil.NewHosts(t)
	bpffs := loadertest.BPFFS(t)
	// The upstream listens in the test's own namespace (the proxy's dials
	// run on goroutines not locked into B).
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(upstream, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"name":"left-pad"}`)
	}))
	defer upstream.Close()

	cfg := config.Default()
	cfg.Agent.Interfaces = []string{h.IfB}
	cfg.Agent.BPFFS = bpffs
	cfg.Agent.BPF = "required"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Proxy.Grace = 5000
	cfg.Proxy.Upstreams = []config.Upstream{{Host: "127.0.0.1", Port: upstream.Addr().(*net.TCPAddr).Port, Hash: 0}}
	build := func(name string) *Agent {
		var a *Agent
		testutil.In(t, h.B, func() {
			var err error
			if a, err = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)).With("agent", name)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := a.Listen(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		})
		return a
	}
	serve := func(name string, a *Agent) (context.CancelFunc, chan error) {
		cancel, done := serveInBackground(a)
		deadline := time.Now().Add(10 * time.Second)
		for !a.Ready() {
			if time.Now().After(deadline) {
				t.Fatalf("%s never became ready", name)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return cancel, done
	}
	first := build("first")
	stopFirst, firstDone := serve("first", first)
	defer func() {
		testutil.In(t, h.B, func() { loader.Detach(bpffs, []string{h.IfB}) })
	}()
	client := startRolloverClient(t, h)
	defer client.halt()
	client.waitSuccesses(t, 30)

	second := build("second") // while the first runs: its programs are in now
	var stopSecond context.CancelFunc
	var secondDone chan error
	if stopEarly {
		stopFirst() // SIGTERM before the second serves
		for first.Ready() {
			time.Sleep(time.Millisecond)
		}
		client.waitSuccesses(t, 10) // the first still serves, waiting for a successor
		stopSecond, secondDone = serve("second", second)
	} else {
		stopSecond, secondDone = serve("second", second)
		client.waitSuccesses(t, 30)
		stopFirst() // SIGTERM: it drains and exits
	}
	defer func() { stopSecond(); <-secondDone }()
	select {
	case err := <-firstDone:
		if err != nil {
			t.Errorf("the first agent's exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the first agent did not exit")
	}
	client.waitSuccesses(t, 30)
	client.halt()

	for _, err := range client.failures {
		kind := "other"
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			kind = "refused"
		case errors.Is(err, syscall.ECONNRESET):
			kind = "reset"
		}
		t.Errorf("a connection failed (%s): %v", kind, err)
	}
	served1 := sumMetric(scrape(t, first, "/metrics"), "regedge_proxy_requests_total")
	served2 := sumMetric(scrape(t, second, "/metrics"), "regedge_proxy_requests_total")
	t.Logf("%d answers, %d failures; the first agent served %v, the second %v", client.successes(), len(client.failures), served1, served2)
	if served1 < 30 || served2 < 30 || int(served1+served2) != client.successes() {
		t.Errorf("served %v + %v, want both agents to serve and %d in all", served1, served2, client.successes())
	}
}
