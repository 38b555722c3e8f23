package loader

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrNoBPFFS means bpffs is not mounted at the configured path and could not
// be mounted (no privilege): pins are unavailable.
var ErrNoBPFFS = errors.New("loader: bpffs is not mounted")

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
// CI kernels boot without it (KERNEL-NOTES.md). It reports whether it mounted.
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

// Explain turns an error from Open into one line of plain words for an
// operator: what is missing and what to do. The agent shows it in /health
// and its log; a verifier's log never goes into it (VerifierLog has that).
func Explain(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoPerfmon):
		return ErrNoPerfmon.Error()
	case errors.Is(err, ErrNoBPFFS), errors.Is(err, ErrHeld), errors.Is(err, ErrKernelTooOld):
		return oneLine(err.Error())
	case errors.Is(err, os.ErrPermission), errors.Is(err, unix.EPERM):
		return "no privileges for BPF: run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (and CAP_SYS_ADMIN to mount bpffs): " + oneLine(err.Error())
	case errors.Is(err, ebpf.ErrNotSupported):
		return "this kernel lacks a BPF feature regedge needs (6.6 or newer has everything): " + oneLine(err.Error())
	}
	return oneLine(err.Error())
}

// oneLine is s up to its first line break, at most 300 bytes.
func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimRight(s[:i], ": ")
	}
	if len(s) > 300 {
		s = s[:297] + "..."
	}
	return s
}
