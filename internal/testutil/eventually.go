package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it returns true and fails the test (naming
// what it waited for) when within passes first. It is the one way tests wait
// for a condition another goroutine, process or the kernel brings about:
// never a bare sleep. Polls start at 1 ms, so a quick condition costs little,
// and back off to 20 ms, so a slow one does not spin.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
			return
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}
