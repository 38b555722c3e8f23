//go:build linux

package loader

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// IsBPFFS reports whether path is on a bpffs mount.
func IsBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("loader: statfs %s: %w", path, err)
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC, nil
}

// EnsureBPFFS mounts bpffs at path when it is not mounted there. Our dev and
// CI kernels boot without it (docs/kernel.md, "Kernel facts"). It reports whether it mounted.
func EnsureBPFFS(path string) (mounted bool, err error) {
	ok, err := IsBPFFS(path)
	if err != nil || ok {
		return false, err
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return false, fmt.Errorf("%w at %s: create the mount point: %w", ErrNoBPFFS, path, err)
	}
	if err := unix.Mount("bpf", path, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("%w at %s and mounting it failed (%w): run as root or mount it: mount -t bpf bpf %s",
			ErrNoBPFFS, path, err, path)
	}
	return true, nil
}
