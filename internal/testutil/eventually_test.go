package testutil

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runRecorded(fn func(t testing.TB)) string {
	r := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r.msg
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	msg := runRecorded(func(tb testing.TB) {
		Eventually(tb, 10*time.Second, "the third call", func() bool { return calls.Add(1) == 3 })
	})
	if msg != "" {
		t.Fatalf("failed: %s", msg)
	}
	if got := calls.Load(); got != 3 {
		t.Fatalf("condition called %d times, want 3 (it stops once true)", got)
	}
}

func TestEventuallyFailsNamingWhatItWaitedFor(t *testing.T) {
	msg := runRecorded(func(tb testing.TB) {
		Eventually(tb, 30*time.Millisecond, "a condition that never holds", func() bool { return false })
	})
	if want := "timed out after 30ms waiting for a condition that never holds"; msg != want {
		t.Fatalf("message %q, want %q", msg, want)
	}
}

func TestPollReportsWhetherTheConditionHeld(t *testing.T) {
	if !Poll(10*time.Second, func() bool { return true }) {
		t.Fatal("Poll of a true condition said it never held")
	}
	start := time.Now()
	if Poll(30*time.Millisecond, func() bool { return false }) {
		t.Fatal("Poll of a false condition said it held")
	}
	if time.Since(start) < 30*time.Millisecond {
		t.Fatal("Poll gave up before its time")
	}
}
