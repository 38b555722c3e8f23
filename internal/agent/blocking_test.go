//go:build linux

package agent

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/loader/loadertest"
	"github.com/regedge/regedge/internal/testutil"
)

// TestBlockListClearedWhenBlockingIsOff: an earlier run left a source on
// the pinned block list; an agent started with token-failure blocking off
// (the default) clears it and says so.
func TestBlockListClearedWhenBlockingIsOff(t *testing.T) {
	if config.Default().Proxy.TokenFailures.Threshold != 0 {
		t.Fatal("token-failure blocking is on by default")
	}
	h := testutil.NewHosts(t)
	bpffs := loadertest.BPFFS(t)
	testutil.In(t, h.B, func() {
		dp, err := loader.Open(loader.Config{Options: loader.DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}})
		if err != nil {
			t.Fatal(err)
		}
		if err := dp.Objects.Block(netip.MustParsePrefix("192.0.2.1/32"), time.Hour); err != nil {
			t.Fatal(err)
		}
		dp.Close()
	})
	cfg := config.Default()
	cfg.Agent.Interfaces, cfg.Agent.BPFFS = []string{h.IfB}, bpffs
	logs := &syncBuffer{}
	a := kernelAgentIn(t, h.B, cfg, slog.New(slog.NewJSONHandler(logs, nil)), false)
	if list, err := a.dp.Objects.Blocked(); err != nil || len(list) != 0 {
		t.Fatalf("block list after start: %v %v", list, err)
	}
	if !strings.Contains(logs.String(), "cleared the block list") {
		t.Fatalf("log: %s", logs)
	}
	a.closeDatapath()
	testutil.In(t, h.B, func() { loader.Detach(bpffs, []string{h.IfB}) })
}
