// Package testutil holds what tests of several packages share: helpers for
// tests that need privileges or the kernel (they skip with a clear reason on
// a laptop and fail in CI, where REGEDGE_REQUIRE_BPF=1 says the machine is
// root on a kernel with BPF), waiting for a condition (Eventually), a clock
// the test moves by hand (Clock), and TLS and DNS fixtures.
package testutil

import (
	"os"
	"testing"
)

// RequireBPFEnv is the variable CI sets so that a skip becomes a failure.
const RequireBPFEnv = "REGEDGE_REQUIRE_BPF"

// Required reports whether privileged tests must run (CI).
func Required() bool { return os.Getenv(RequireBPFEnv) == "1" }

// SkipOrFail skips the test with reason, or fails it when REGEDGE_REQUIRE_BPF=1.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (and %s=1: privileged tests must run here)", reason, RequireBPFEnv)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails in CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root (CAP_BPF, CAP_NET_ADMIN): run as root or in the Vagrant VM")
	}
}
