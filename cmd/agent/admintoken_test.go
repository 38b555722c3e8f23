package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
)

// inNamespace runs this binary as the regedge CLI inside a named network
// namespace (net/http dials from goroutines of its own: a namespace
// switch of the test's thread would not hold for them).
func inNamespace(t *testing.T, ns string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, os.Args[0]}, args...)...)
	cmd.Env = append(os.Environ(), "REGEDGE_TEST_RUN_CLI=1", adminTokenEnv+"=")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// TestAdminWritesOffLoopbackTakeToken: an agent whose admin listener is
// on a node address (namespace B) refuses config set and cache purge from
// A without a token, with a hint; with --token (scope config:write) both
// go through.
func TestAdminWritesOffLoopbackTakeToken(t *testing.T) {
	h := testutil.NewHosts(t)
	keyFile, pubFile, err := token.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := token.ReadPrivateKey(keyFile)
	exp := jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}
	adminTok, _ := token.Issue(key, "", token.Claims{Scope: token.ScopeConfigWrite, RegisteredClaims: exp})
	cfg := config.Default()
	cfg.Admin.Listen = "192.0.2.2:0"
	cfg.Bus.Port, cfg.WebSocket.Port, cfg.Proxy.ListenPort = 0, 0, 0
	cfg.Tokens.PublicKeys = []string{pubFile}
	cfg.Proxy.Cache.Dir = t.TempDir()
	var a *agent.Agent
	testutil.In(t, h.B, func() {
		if a, err = agent.New(cfg, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		if err = a.Listen(); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 10*time.Second, "agent ready", a.Ready)
	admin := fmt.Sprintf("192.0.2.2:%d", a.AdminAddr().(*net.TCPAddr).Port)

	out, code := inNamespace(t, h.NameA, "config", "set", "rows", "40", "--to", admin)
	if code != 1 || !strings.Contains(out, "401") || !strings.Contains(out, "--token") || a.State().Rows != 24 {
		t.Fatalf("config set without a token: exit %d %s", code, out)
	}
	out, code = inNamespace(t, h.NameA, "config", "set", "rows", "40", "--to", admin, "--token", adminTok)
	if code != 0 || a.State().Rows != 40 {
		t.Fatalf("config set with --token: exit %d %s", code, out)
	}
	out, code = inNamespace(t, h.NameA, "cache", "purge", "left-pad", "--to", admin)
	if code != 1 || !strings.Contains(out, "401") {
		t.Fatalf("cache purge without a token: exit %d %s", code, out)
	}
	out, code = inNamespace(t, h.NameA, "cache", "purge", "left-pad", "--to", admin, "--token", adminTok)
	if code != 0 || !strings.Contains(out, "purged 0 entries of left-pad") {
		t.Fatalf("cache purge with --token: exit %d %s", code, out)
	}
}
