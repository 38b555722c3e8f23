package configbus

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/testutil"
)

// brokenStateDir returns a state file path, a func that breaks its
// directory (a regular file takes its name, so it cannot be created: the
// unprivileged form of a state directory that is not writable; root
// ignores permission bits) and one that repairs it.
func brokenStateDir(t *testing.T) (file string, repair, brk func()) {
	t.Helper()
	sub := filepath.Join(t.TempDir(), "statedir")
	return filepath.Join(sub, "state"), func() {
			if err := os.Remove(sub); err != nil {
				t.Error(err)
			}
		}, func() {
			if err := os.WriteFile(sub, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
}

func TestHandleStorageError(t *testing.T) {
	file, _, brk := brokenStateDir(t)
	s, st := newServer(t, file)
	brk()
	f := codec.Update(codec.FieldRows, 40)
	reply, verdict := s.Handle(codec.AppendDatagram(nil, codec.DefaultState(), &f), client)
	d := decodeReply(t, reply)
	if verdict != VerdictStorage || d.Frame.Type != codec.TypeError || codec.ErrorCode(d.Frame.Field) != codec.ErrCodeStorage ||
		d.Frame.ErrorMessage() != "storage" {
		t.Fatalf("verdict %s, answer %+v; want ERROR 6 storage", verdict, d.Frame)
	}
	if st.State() != codec.DefaultState() || d.Sender != codec.DefaultState() {
		t.Fatalf("state %v, reported %v: the refused change shows", st.State(), d.Sender)
	}
}

// A disk problem is retried (with backoff) until it is repaired; a change
// the agent refuses is not.
func TestPushRetriesOnStorage(t *testing.T) {
	file, repair, brk := brokenStateDir(t)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(state.Options{Initial: codec.DefaultState(), File: file})
	if err != nil {
		t.Fatal(err)
	}
	brk()
	srv := NewServer(conn, st, Options{Allow: loopback}, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	target := conn.LocalAddr().String()
	storage := srv.verdicts.WithLabelValues(VerdictStorage)

	// Still broken at the deadline: retried, with backoff (a retry per
	// answer would send hundreds), and reported.
	res, err := Push(context.Background(), []string{target}, PushOptions{
		Sender: codec.DefaultState(), Entries: []codec.Entry{{Field: codec.FieldRows, Value: 40}},
		Deadline: time.Second, Retry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Waits of 50, 100, 200, 200, ... ms fit at most 7 sends in 1 s.
	if r := res[0]; r.Converged || r.Attempts < 2 || r.Attempts > 8 || !strings.Contains(r.Err, `ERROR 6 "storage"`) {
		t.Fatalf("broken disk: %+v", r)
	}
	if n := promtest.ToFloat64(storage); n != float64(res[0].Attempts) {
		t.Fatalf("%v storage verdicts for %d attempts", n, res[0].Attempts)
	}

	// Repaired while the push retries: it converges.
	before := promtest.ToFloat64(storage)
	results := make(chan []Result, 1)
	go func() {
		r, _ := Push(context.Background(), []string{target}, PushOptions{
			Sender: codec.DefaultState(), Entries: []codec.Entry{{Field: codec.FieldRows, Value: 40}},
			Deadline: 20 * time.Second, Retry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
		})
		results <- r
	}()
	testutil.Eventually(t, 10*time.Second, "the push to reach the agent", func() bool { return promtest.ToFloat64(storage) != before })
	repair()
	r := (<-results)[0]
	if !r.Converged || r.Attempts < 2 || r.Err != "" || st.State().Rows != 40 {
		t.Fatalf("after the repair: %+v, state %v", r, st.State())
	}
	if b, err := os.ReadFile(file); err != nil || !strings.Contains(string(b), st.State().Dump()) {
		t.Fatalf("state file %q, %v", b, err)
	}
}
