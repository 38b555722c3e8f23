package loader

import (
	"errors"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrNoBPFFS means bpffs is not mounted at the configured path and could not
// be mounted (no privilege): pins are unavailable.
var ErrNoBPFFS = errors.New("loader: bpffs is not mounted")

// Explain turns an error from Open into plain words for an operator: what
// is missing and what to do. The agent logs it and shows it in /health.
func Explain(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoBPFFS):
		return err.Error()
	case errors.Is(err, os.ErrPermission), errors.Is(err, unix.EPERM):
		return "no privileges for BPF: run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (and CAP_SYS_ADMIN to mount bpffs): " + err.Error()
	case errors.Is(err, ebpf.ErrNotSupported):
		return "this kernel lacks a BPF feature regedge needs (6.6 or newer has everything): " + err.Error()
	}
	return err.Error()
}
