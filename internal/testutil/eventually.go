package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it returns true and fails the test (naming
// what it waited for) when within passes first. It is the one way tests wait
// for a condition another goroutine, process or the kernel brings about:
// never a bare sleep.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(within, cond) {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

// Poll is Eventually for a test that says more than what it waited for
// when the wait fails (a child process's log, say): it reports whether cond
// held within the time. Polls start at 1 ms, so a quick condition costs
// little, and back off to 20 ms, so a slow one does not spin.
func Poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
	return true
}
