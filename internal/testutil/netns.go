package testutil

import (
	"testing"

	"github.com/vishvananda/netns"

	"github.com/regedge/regedge/internal/vethpair"
)

// Hosts is vethpair.Hosts: two namespaces a test made for itself.
type Hosts = vethpair.Hosts

// NewHosts creates two namespaces joined by veth; t.Cleanup removes them.
// It needs root; it skips (or fails in CI) without.
func NewHosts(t testing.TB) *Hosts {
	t.Helper()
	RequireRoot(t)
	h, err := vethpair.Create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("remove test namespaces: %v", err)
		}
	})
	return h
}

// In runs fn inside ns on the calling goroutine (see vethpair.In). fn may
// call t.Fatal: the deferred switch back still runs.
func In(t testing.TB, ns netns.NsHandle, fn func()) {
	t.Helper()
	if err := vethpair.In(ns, fn); err != nil {
		t.Fatal(err)
	}
}
