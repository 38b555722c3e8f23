package loader

import (
	"errors"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrNoBPFFS means bpffs is not mounted at the configured path and could not
// be mounted (no privilege): pins are unavailable.
var ErrNoBPFFS = errors.New("loader: bpffs is not mounted")

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
