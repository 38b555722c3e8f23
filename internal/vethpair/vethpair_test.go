//go:build linux

package vethpair_test

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/vethpair"
)

// TestCreateFailureLeavesNothing: when the second namespace cannot be made
// (its name is taken), Create returns the error and removes the first one.
// It used to close the named result, which every error return had set to
// nil: a nil dereference instead of the clean-up.
func TestCreateFailureLeavesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	nameA, nameB := vethpair.NextNames()
	made := make(chan error)
	go func() {
		// NewNamed moves the thread into the new namespace: the thread stays
		// locked and ends with this goroutine.
		runtime.LockOSThread()
		ns, err := netns.NewNamed(nameB)
		if err == nil {
			err = ns.Close()
		}
		made <- err
	}()
	if err := <-made; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(nameB); err != nil {
			t.Errorf("remove %s: %v", nameB, err)
		}
	})

	h, err := vethpair.Create()
	if err == nil {
		h.Close()
		t.Fatalf("Create succeeded although %s was taken", nameB)
	}
	if ns, err := netns.GetFromName(nameA); err == nil {
		ns.Close()
		_ = netns.DeleteNamed(nameA)
		t.Fatalf("the failed Create left %s behind", nameA)
	}
}
