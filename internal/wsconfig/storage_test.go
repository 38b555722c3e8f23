package wsconfig

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
)

// A change the agent cannot persist is answered with ERROR 6 (storage), not
// 4 (invalid), is applied nowhere and is broadcast to nobody.
func TestStorageErrorFrame(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "statedir")
	st, err := state.Open(state.Options{Initial: codec.DefaultState(), File: filepath.Join(sub, "state")})
	if err != nil {
		t.Fatal(err)
	}
	// A regular file where the state directory goes: it cannot be created
	// (root ignores permission bits; this it cannot ignore).
	if err := os.WriteFile(sub, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := New(st, Options{HeartbeatInterval: time.Hour}, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { cancel(); <-done; hs.Close() })
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + Path
	c1, c2 := dial(t, url), dial(t, url)

	send(t, c1, codec.Update(codec.FieldRows, 40))
	f := next(t, c1)
	if f.Type != codec.TypeError || codec.ErrorCode(f.Field) != codec.ErrCodeStorage || f.ErrorMessage() != "storage" {
		t.Fatalf("answer %+v (%q), want ERROR 6 \"storage\"", f, f.ErrorMessage())
	}
	if st.State() != codec.DefaultState() {
		t.Fatalf("state %v after a refused change", st.State())
	}
	// Repaired: the next change goes through, and it is the first thing
	// the other client hears of (the refused one was never broadcast).
	if err := os.Remove(sub); err != nil {
		t.Fatal(err)
	}
	send(t, c1, codec.Update(codec.FieldRows, 41))
	if f := next(t, c1); f.Type != codec.TypeAck {
		t.Fatalf("after the repair: %+v", f)
	}
	if f := next(t, c2); f.Type != codec.TypeUpdate || codec.FieldID(f.Field) != codec.FieldRows || f.Value != 41 {
		t.Fatalf("c2 heard %+v first, want UPDATE rows=41", f)
	}
}
