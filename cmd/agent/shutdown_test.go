package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/testutil"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSIGTERMWithRequestsOutlastingGraceExitsZero: `regedge run` stopped
// with SIGTERM while a request outlasts proxy.grace cuts it, says so, and
// exits 0 (a shutdown that was asked for is not a failure: systemd must not
// mark the unit failed).
func TestSIGTERMWithRequestsOutlastingGraceExitsZero(t *testing.T) {
	var asked atomic.Int64
	hold := make(chan struct{})
	defer close(hold)
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				http.ReadRequest(bufio.NewReader(c))
				asked.Add(1)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
				<-hold // the rest never comes in time
			}()
		}
	}()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "regedge.json")
	os.WriteFile(cfgFile, []byte(`{"proxy": {"grace": 300}}`), 0o644)
	proxyPort, adminPort := freePort(t), freePort(t)
	cmd := exec.Command(os.Args[0], "run", "--config", cfgFile)
	cmd.Env = append(os.Environ(), "REGEDGE_TEST_RUN_CLI=1",
		"PROXY_HOST=127.0.0.1", fmt.Sprintf("PROXY_PORT=%d", proxyPort),
		fmt.Sprintf("REGEDGE_ADMIN_LISTEN=127.0.0.1:%d", adminPort), "WS_PORT=0", "REGEDGE_BUS_PORT=0",
		"UPSTREAM_FALLBACK=http://"+up.Addr().String(), "BUN_CONFIG_REGISTRY_HASH=0x00000000")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	ready := testutil.Poll(20*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if !ready {
		t.Fatalf("the agent never became ready:\n%s", stderr.String())
	}
	got := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/slow/-/slow-1.0.0.tgz", proxyPort))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		got <- err
	}()
	testutil.Eventually(t, 10*time.Second, "the request to reach the upstream", func() bool { return asked.Load() != 0 })
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the agent did not exit after SIGTERM:\n%s", stderr.String())
	}
	if err := <-got; err == nil {
		t.Fatal("the request that outlasted the grace came out whole")
	}
	if !strings.Contains(stderr.String(), "shutdown grace ran out") {
		t.Fatalf("no word of the cut requests:\n%s", stderr.String())
	}
}
