//go:build linux

// Package loadertest holds test helpers for packages that run the kernel
// datapath (the agent, the CLI). The loader's own tests keep theirs: they
// cannot import a package that imports the loader.
package loadertest

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/loader"
	"github.com/regedge/regedge/internal/testutil"
)

// BPFFS mounts a bpffs of the test's own on a temporary directory, so the
// test's pins never meet a real agent's (or another test's); it is
// unmounted at cleanup. Without the privilege to mount, the test skips (or
// fails under REGEDGE_REQUIRE_BPF=1).
func BPFFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := loader.EnsureBPFFS(dir); err != nil {
		testutil.SkipOrFail(t, fmt.Sprintf("cannot mount bpffs: %v", err))
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}
