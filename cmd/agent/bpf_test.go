//go:build linux

package main

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/testutil"
)

func TestBPFStatusAndDetach(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := t.TempDir()
	if _, err := loader.EnsureBPFFS(bpffs); err != nil {
		testutil.SkipOrFail(t, err.Error())
	}
	t.Cleanup(func() { unix.Unmount(bpffs, unix.MNT_DETACH) })
	testutil.In(t, h.B, func() {
		dp, err := loader.Open(loader.Config{Options: loader.DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}})
		if err != nil {
			t.Fatal(err)
		}
		dp.Close() // the pins stay
	})
	out, errs, code := run(t, "", "bpf", "status", "--bpffs", bpffs)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"xdp-" + h.IfB, "tcx-ingress-" + h.IfB, "regedge_xdp", "regedge_tc_ingress",
		"xdp_stats", "registry_stats", "flow_tags", "total", "xdp   pass",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
	testutil.In(t, h.B, func() {
		out, errs, code = run(t, "", "bpf", "detach", "--bpffs", bpffs, "--interface", h.IfB)
	})
	if code != 0 || !strings.Contains(out, "detached") {
		t.Fatalf("detach: exit %d: %s %s", code, out, errs)
	}
	out, _, _ = run(t, "", "bpf", "status", "--bpffs", bpffs)
	if !strings.Contains(out, "no regedge kernel state") {
		t.Fatalf("status after detach:\n%s", out)
	}
}
