//go:build linux

package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/loader/loadertest"
	"github.com/regedge/regedge/internal/testutil"
)

func TestBPFStatusAndDetach(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := loadertest.BPFFS(t)
	testutil.In(t, h.B, func() {
		dp, err := loader.Open(loader.Config{Options: loader.DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}})
		if err != nil {
			t.Fatal(err)
		}
		if err := dp.Objects.Block(netip.MustParsePrefix("192.0.2.77/32"), time.Hour); err != nil {
			t.Fatal(err)
		}
		dp.Close() // the pins stay
	})
	// The block list, from the pins, with no agent running.
	out, errs, code := run(t, "", "bpf", "blocklist", "list", "--bpffs", bpffs)
	if code != 0 || !strings.Contains(out, "192.0.2.77/32") || !strings.Contains(out, "EXPIRES") {
		t.Fatalf("blocklist list: exit %d %s\n%s", code, errs, out)
	}
	if _, errs, code = run(t, "", "bpf", "blocklist", "unblock", "192.0.2.78", "--bpffs", bpffs); code != 1 || !strings.Contains(errs, "not on the block list") {
		t.Fatalf("unblock of a source not there: exit %d %s", code, errs)
	}
	if _, _, code = run(t, "", "bpf", "blocklist", "unblock", "not-an-address", "--bpffs", bpffs); code != 2 {
		t.Fatalf("unblock of garbage: exit %d", code)
	}
	if out, errs, code = run(t, "", "bpf", "blocklist", "unblock", "192.0.2.77", "--bpffs", bpffs); code != 0 || !strings.Contains(out, "unblocked 192.0.2.77/32") {
		t.Fatalf("unblock: exit %d %s %s", code, out, errs)
	}
	if out, _, _ = run(t, "", "bpf", "blocklist", "list", "--bpffs", bpffs); !strings.Contains(out, "empty") {
		t.Fatalf("list after unblock:\n%s", out)
	}
	out, errs, code = run(t, "", "bpf", "status", "--bpffs", bpffs)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"xdp-" + h.IfB, "tcx-ingress-" + h.IfB, "regedge_xdp", "regedge_tc_ingress",
		"xdp_stats", "registry_stats", "sock_registry", "total", "xdp   pass",
		"LOCAL ADDRESSES", "192.0.2.2", // B's address, written by the datapath's watcher
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

// TestBPFStatusMarksDefunctLinks: links attached to a veth in a namespace
// of the test's; the interface is deleted with no agent running. `bpf
// status` lists each pin as defunct, not as live; an agent's start
// (loader.Open, the interface no longer configured) removes them.
func TestBPFStatusMarksDefunctLinks(t *testing.T) {
	h := testutil.NewHosts(t)
	bpffs := loadertest.BPFFS(t)
	defer loader.Detach(bpffs, nil)
	testutil.In(t, h.B, func() {
		dp, err := loader.Open(loader.Config{Options: loader.DefaultOptions(), BPFFS: bpffs, Interfaces: []string{h.IfB}})
		if err != nil {
			t.Fatal(err)
		}
		dp.Close() // the pins stay
	})
	links := []string{"xdp-" + h.IfB, "tcx-ingress-" + h.IfB, "tcx-egress-" + h.IfB}
	lineOf := func(out, name string) string {
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, name+" ") {
				return line
			}
		}
		return ""
	}
	out, errs, code := run(t, "", "bpf", "status", "--bpffs", bpffs)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errs)
	}
	for _, l := range links {
		if line := lineOf(out, l); !strings.HasSuffix(line, " live") {
			t.Errorf("status before the interface was deleted, %s: %q, want live\n%s", l, line, out)
		}
	}

	hb, err := netlink.NewHandleAt(h.B)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	veth, err := hb.LinkByName(h.IfB)
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.LinkDel(veth); err != nil {
		t.Fatal(err)
	}
	out, errs, code = run(t, "", "bpf", "status", "--bpffs", bpffs)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errs)
	}
	for _, l := range links {
		if line := lineOf(out, l); !strings.Contains(line, "defunct: its interface was deleted") {
			t.Errorf("status after the interface was deleted, %s: %q, want defunct\n%s", l, line, out)
		}
	}
	if !strings.Contains(out, "3 defunct link pin(s)") {
		t.Errorf("status does not count the defunct pins:\n%s", out)
	}
	t.Logf("\n%s", out)

	testutil.In(t, h.B, func() {
		dp, err := loader.Open(loader.Config{Options: loader.DefaultOptions(), BPFFS: bpffs})
		if err != nil {
			t.Fatal(err)
		}
		dp.Close()
	})
	out, _, _ = run(t, "", "bpf", "status", "--bpffs", bpffs)
	for _, l := range links {
		if line := lineOf(out, l); line != "" {
			t.Errorf("after a start, status still lists %q\n%s", line, out)
		}
	}
}
