package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestMain lets a test run this test binary as the regedge CLI (for the
// pseudo-terminal test).
func TestMain(m *testing.M) {
	if os.Getenv("REGEDGE_TEST_RUN_CLI") == "1" {
		os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestTopOnce(t *testing.T) {
	a := runningAgent(t)
	out, errs, code := run(t, "", "top", "--once", "--from", a.AdminAddr().String())
	if code != 0 || !strings.Contains(out, "regedge top") || !strings.Contains(out, "bpf userspace") || strings.Contains(out, "q to quit") {
		t.Fatalf("top --once: %d %s\n%s", code, errs, out)
	}
}

// TestTopUnderAPseudoTerminal runs `regedge top` against a live agent in a
// pseudo-terminal, waits for its view, and quits it with q.
func TestTopUnderAPseudoTerminal(t *testing.T) {
	a := runningAgent(t)
	cmd := exec.Command(os.Args[0], "top", "--from", a.AdminAddr().String())
	cmd.Env = append(os.Environ(), "REGEDGE_TEST_RUN_CLI=1", "TERM=xterm-256color")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	var screen bytes.Buffer
	found := make(chan bool, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			screen.Write(buf[:n])
			if strings.Contains(screen.String(), "bpf userspace") {
				found <- true
				io.Copy(io.Discard, ptmx)
				return
			}
			if err != nil {
				found <- false
				return
			}
		}
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("the view never showed the agent's mode:\n%q", screen.String())
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("no view within 15 s:\n%q", screen.String())
	}
	ptmx.Write([]byte("q"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("top exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("q did not quit")
	}
}
