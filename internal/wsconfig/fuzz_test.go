package wsconfig

import (
	"testing"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/vectors"
)

// FuzzHandle: any client message never panics, always gets exactly one
// answer unless it is an ACK or ERROR, and changes the state only when it
// is a valid state-changing frame (to exactly what Apply says).
func FuzzHandle(f *testing.F) {
	all, err := vectors.Load()
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range all.Frames {
		f.Add(v.Bytes(), true)
	}
	st, err := state.Open(state.Options{Initial: codec.DefaultState()})
	if err != nil {
		f.Fatal(err)
	}
	srv := New(st, Options{QueueSize: 16}, quiet)
	f.Fuzz(func(t *testing.T, b []byte, canWrite bool) {
		c := &client{send: make(chan []byte, 16), canWrite: canWrite, done: make(chan struct{})}
		before := st.State()
		srv.handle(c, b)
		after := st.State()
		fr, decErr := codec.DecodeFrame(b)
		switch {
		case decErr != nil || !fr.Type.Acked() || !canWrite:
			if after != before {
				t.Fatalf("%x changed the state (canWrite %v)", b, canWrite)
			}
		default:
			want, err := before.Apply(&fr)
			if err == nil && want.Version == 1 && after != want {
				t.Fatalf("state %v, want %v", after, want)
			}
		}
		answers := len(c.send)
		quiet := decErr == nil && (fr.Type == codec.TypeAck || fr.Type == codec.TypeError)
		if (quiet && answers != 0) || (!quiet && answers != 1) {
			t.Fatalf("%x: %d answers", b, answers)
		}
		st.Set(codec.DefaultState(), state.SourceCLI)
	})
}
