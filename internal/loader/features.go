package loader

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// ErrKernelTooOld wraps ebpf.ErrNotSupported for a kernel that lacks a
// feature regedge needs; its message names the feature and the Linux
// version that brought it.
var ErrKernelTooOld = fmt.Errorf("this kernel is too old for regedge's datapath: %w", ebpf.ErrNotSupported)

// ErrNoPerfmon: the verifier refused a program because the process lacks
// CAP_PERFMON (needed with CAP_BPF for pointer arithmetic on packet and map
// values when not root; the DaemonSet grants it).
var ErrNoPerfmon = errors.New("CAP_PERFMON is missing: with CAP_BPF and CAP_NET_ADMIN alone the verifier refuses pointer arithmetic; grant CAP_PERFMON too")

// feature is one thing the programs need from the kernel.
type feature struct {
	what  string // in an operator's words
	since string // the Linux version that brought it
	probe func() error
}

// requiredFeatures are what the programs use, oldest first. TCX (6.6) is
// not here: without it TC falls back to clsact. XDP links (5.9) are older
// than bpf_xdp_load_bytes (5.18) and so covered by it.
var requiredFeatures = []feature{
	{"XDP programs", "4.8", func() error { return features.HaveProgramType(ebpf.XDP) }},
	{"LPM trie maps", "4.11", func() error { return features.HaveMapType(ebpf.LPMTrie) }},
	{"SOCKMAP", "4.14", func() error { return features.HaveMapType(ebpf.SockMap) }},
	{"socket lookups from TC", "4.20", func() error { return features.HaveProgramHelper(ebpf.SchedCLS, asm.FnSkLookupTcp) }},
	{"socket-local storage", "5.2", func() error { return features.HaveMapType(ebpf.SkStorage) }},
	{"socket-local storage from TC", "5.2", func() error { return features.HaveProgramHelper(ebpf.SchedCLS, asm.FnSkStorageGet) }},
	{"sk_lookup programs", "5.9", func() error { return features.HaveProgramType(ebpf.SkLookup) }},
	{"bpf_xdp_load_bytes", "5.18", func() error { return features.HaveProgramHelper(ebpf.XDP, asm.FnXdpLoadBytes) }},
}

// Probe checks that the kernel has every feature the programs need. A
// missing one is ErrKernelTooOld naming it and the version needed; a probe
// that could not run (no privileges) is returned as it is.
func Probe() error {
	for _, f := range requiredFeatures {
		err := f.probe()
		if err == nil {
			continue
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("%w: it lacks %s, which need Linux %s or newer (this is %s)", ErrKernelTooOld, f.what, f.since, kernelRelease())
		}
		return fmt.Errorf("loader: probe for %s: %w", f.what, err)
	}
	return nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// loadErr wraps an error from loading a collection; a verifier refusal
// that only CAP_PERFMON would lift also wraps ErrNoPerfmon. The message is
// one line: VerifierLog has the whole log for the agent's debug output.
func loadErr(what string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		// The verifier's words for it vary ("prohibited for !root",
		// "pointer -= pointer prohibited"); a refusal to a process that
		// lacks CAP_PERFMON is what they have in common.
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			if lacksPerfmon() {
				return fmt.Errorf("loader: the verifier refused the %s program: %w: %w", what, ErrNoPerfmon, err)
			}
		}
		return fmt.Errorf("loader: the verifier refused the %s program: %w", what, err)
	}
	return fmt.Errorf("loader: load the %s objects: %w", what, err)
}

// VerifierLog returns the verifier's whole log when err carries one.
func VerifierLog(err error) string {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return ""
	}
	return strings.Join(ve.Log, "\n")
}
