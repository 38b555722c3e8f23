package configbus

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/vectors"
)

var (
	loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	client   = netip.MustParseAddrPort("127.0.0.1:40000")
	quiet    = slog.New(slog.NewTextHandler(io.Discard, nil))
)

func newServer(t testing.TB, file string) (*Server, *state.Store) {
	t.Helper()
	st, err := state.Open(state.Options{Initial: codec.DefaultState(), File: file})
	if err != nil {
		t.Fatal(err)
	}
	return NewServer(nil, st, Options{Allow: loopback}, quiet), st
}

func decodeReply(t testing.TB, b []byte) codec.Datagram {
	t.Helper()
	all := allVersions()
	d, err := codec.DecodeDatagram(b, &all)
	if err != nil {
		t.Fatalf("reply %x: %v", b, err)
	}
	return d
}

func TestHandleVectors(t *testing.T) {
	all, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range all.Datagrams {
		s, st := newServer(t, "")
		before := st.State()
		reply, verdict := s.Handle(v.Bytes(), client)
		if verdict != v.Verdict {
			t.Errorf("%s: verdict %s, want %s", v.Name, verdict, v.Verdict)
		}
		if v.Verdict == "ok" {
			in, _ := codec.DecodeDatagram(v.Bytes(), &codec.DefaultVersions)
			switch {
			case in.Frame.Type.Acked():
				if d := decodeReply(t, reply); d.Frame.Type != codec.TypeAck || codec.FrameType(d.Frame.Field) != in.Frame.Type || d.Sender != st.State() {
					t.Errorf("%s: reply %v, want ACK of %v with the resulting state", v.Name, d.Frame.Type, in.Frame.Type)
				}
			case in.Frame.Type == codec.TypeHeartbeat:
				if d := decodeReply(t, reply); d.Frame.Type != codec.TypeHeartbeat {
					t.Errorf("%s: reply %v, want HEARTBEAT", v.Name, d.Frame.Type)
				}
			default:
				if reply != nil {
					t.Errorf("%s: an answer was answered", v.Name)
				}
			}
			continue
		}
		d := decodeReply(t, reply)
		if d.Frame.Type != codec.TypeError || d.Sender != before || st.State() != before {
			t.Errorf("%s: reply %v state %v: want ERROR and nothing changed", v.Name, d.Frame.Type, st.State())
		}
		r, _ := codec.ParseReason(v.Verdict)
		if codec.ErrorCode(d.Frame.Field) != codec.ErrorCodeFor(r) || d.Frame.ErrorMessage() != v.Verdict {
			t.Errorf("%s: ERROR %d %q", v.Name, d.Frame.Field, d.Frame.ErrorMessage())
		}
	}
}

func TestHandleSourceVersionHeartbeat(t *testing.T) {
	s, st := newServer(t, "")
	f := codec.Update(codec.FieldRows, 40)
	dg := codec.AppendDatagram(nil, codec.DefaultState(), &f)
	// An off-list source gets nothing back: no reflection, no state.
	for _, in := range [][]byte{dg, {0x01}, nil} {
		reply, verdict := s.Handle(in, netip.MustParseAddrPort("192.0.2.7:1"))
		if verdict != VerdictSource || reply != nil || st.State().Rows != 24 {
			t.Fatalf("%x from outside the allow-list: %s, reply %x", in, verdict, reply)
		}
	}
	var reply []byte
	var verdict string
	if _, verdict = s.Handle(dg, netip.MustParseAddrPort("[::ffff:127.0.0.1]:1")); verdict != "ok" || st.State().Rows != 40 {
		t.Fatalf("IPv4-mapped loopback: %s", verdict)
	}
	v2 := codec.Update(codec.FieldVersion, 2)
	reply, verdict = s.Handle(codec.AppendDatagram(nil, codec.DefaultState(), &v2), client)
	if d := decodeReply(t, reply); verdict != VerdictNotAllowed || codec.ErrorCode(d.Frame.Field) != codec.ErrCodeNotAllowed || st.State().Version != 1 {
		t.Fatalf("version change: %s %+v", verdict, d.Frame)
	}
	hb := codec.Heartbeat(1)
	reply, _ = s.Handle(codec.AppendDatagram(nil, codec.DefaultState(), &hb), client)
	if d := decodeReply(t, reply); d.Frame.Type != codec.TypeHeartbeat || d.Frame.Value < 1700000000000 {
		t.Fatalf("heartbeat answer %+v", d.Frame)
	}
	ack := codec.Ack(codec.TypeUpdate)
	if reply, _ = s.Handle(codec.AppendDatagram(nil, codec.DefaultState(), &ack), client); reply != nil {
		t.Fatal("an ACK was answered")
	}
}

// startServer serves a store on a loopback UDP socket.
func startServer(t *testing.T, file string) (string, *state.Store) {
	t.Helper()
	addr, st, _ := startServerWith(t, file, Options{Allow: loopback})
	return addr, st
}

func startServerWith(t *testing.T, file string, opts Options) (string, *state.Store, *Server) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(state.Options{Initial: codec.DefaultState(), File: file})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(conn, st, opts, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	return conn.LocalAddr().String(), st, srv
}

func TestPushConverges(t *testing.T) {
	a, sa := startServer(t, "")
	b, sb := startServer(t, filepath.Join(t.TempDir(), "state"))
	res, err := Push(context.Background(), []string{a, b}, PushOptions{
		Sender:  codec.DefaultState(),
		Entries: []codec.Entry{{Field: codec.FieldRows, Value: 40}, {Field: codec.FieldCols, Value: 120}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range []*state.Store{sa, sb} {
		if !res[i].Converged || res[i].Attempts != 1 || st.State().Rows != 40 || st.State().Cols != 120 || res[i].Reported != st.State() {
			t.Errorf("target %s: %+v, state %v", res[i].Target, res[i], st.State())
		}
	}
}

func TestPushReportsUnreachableAndRefused(t *testing.T) {
	a, _ := startServer(t, "")
	// A port nobody listens on: no answer, retried until the deadline.
	dead, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	start := time.Now()
	res, err := Push(context.Background(), []string{a, deadAddr}, PushOptions{
		Sender: codec.DefaultState(), Entries: []codec.Entry{{Field: codec.FieldRows, Value: 50}},
		Deadline: 700 * time.Millisecond, Retry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Converged || res[1].Converged || res[1].Attempts < 3 || res[1].HasReport || res[1].Err == "" {
		t.Fatalf("results %+v", res)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("push ran %v past its deadline", time.Since(start))
	}
	// A change the agent refuses is not retried.
	res, _ = Push(context.Background(), []string{a}, PushOptions{
		Sender: codec.DefaultState(), Entries: []codec.Entry{{Field: codec.FieldVersion, Value: 2}},
		Deadline: 2 * time.Second,
	})
	if res[0].Converged || res[0].Attempts != 1 || !bytes.Contains([]byte(res[0].Err), []byte("ERROR 5")) {
		t.Fatalf("refused push: %+v", res[0])
	}
	// Invalid pushes are refused before anything is sent.
	if _, err := Push(context.Background(), []string{a}, PushOptions{Sender: codec.DefaultState(), Entries: []codec.Entry{{Field: codec.FieldRows, Value: 0}}}); err == nil {
		t.Fatal("a push of rows=0 was sent")
	}
}

// FuzzHandle: random input never panics and never changes the state unless
// it is a valid, allowed, state-changing datagram.
func FuzzHandle(f *testing.F) {
	all, err := vectors.Load()
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range all.Datagrams {
		f.Add(v.Bytes())
	}
	s, st := newServer(f, "")
	f.Fuzz(func(t *testing.T, b []byte) {
		before := st.State()
		reply, verdict := s.Handle(b, client)
		after := st.State()
		var d codec.Datagram
		versions := st.Versions()
		valid := codec.DecodeDatagramInto(&d, b, &versions) == nil
		if !valid && after != before {
			t.Fatalf("invalid input %x changed the state", b)
		}
		if valid && d.Frame.Type.Acked() {
			want, err := before.Apply(&d.Frame)
			if err == nil && want.Version == 1 && after != want {
				t.Fatalf("state %v, want %v", after, want)
			}
		}
		if verdict == "" || (reply == nil && valid && d.Frame.Type.Acked()) {
			t.Fatalf("verdict %q reply %x", verdict, reply)
		}
		st.Set(codec.DefaultState(), state.SourceCLI) // every input starts from the default
	})
}
