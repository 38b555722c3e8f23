package wsconfig

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/token"
	"github.com/regedge/regedge/internal/vectors"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func startServer(t testing.TB, opts Options) (*Server, *state.Store, string) {
	t.Helper()
	st, err := state.Open(state.Options{Initial: codec.DefaultState()})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(st, opts, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	hs := httptest.NewUnstartedServer(srv)
	// Small socket send buffers, so that a client that stops reading makes
	// the server's writes block soon (the default autotunes to megabytes).
	hs.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetWriteBuffer(4096)
		}
		return ctx
	}
	hs.Start()
	t.Cleanup(func() { cancel(); <-done; hs.Close() })
	return srv, st, "ws" + strings.TrimPrefix(hs.URL, "http") + Path
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Subprotocol() != Subprotocol || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("subprotocol %q status %d", c.Subprotocol(), resp.StatusCode)
	}
	t.Cleanup(func() { c.CloseNow() })
	// The 13-byte state comes first.
	if b := read(t, c); len(b) != codec.StateSize {
		t.Fatalf("first message %x, want the 13-byte state", b)
	}
	return c
}

func read(t *testing.T, c *websocket.Conn) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("message type %v", typ)
	}
	return b
}

// next reads until a frame other than a HEARTBEAT arrives.
func next(t *testing.T, c *websocket.Conn) codec.Frame {
	t.Helper()
	for {
		f, err := codec.DecodeFrame(read(t, c))
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != codec.TypeHeartbeat {
			return f
		}
	}
}

func send(t *testing.T, c *websocket.Conn, f codec.Frame) {
	t.Helper()
	sendBytes(t, c, f.Bytes())
}

func sendBytes(t *testing.T, c *websocket.Conn, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
}

func TestRefusedWithoutSubprotocol(t *testing.T) {
	_, _, url := startServer(t, Options{})
	resp, err := http.Get("http" + strings.TrimPrefix(url, "ws"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || strings.TrimSpace(string(body)) != "Subprotocol bun.config.v1 required" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err = websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"other.v1"}})
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("dial offering another subprotocol: %v", err)
	}
}

func TestStateOnConnectAckAndBroadcast(t *testing.T) {
	_, st, url := startServer(t, Options{HeartbeatInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c1, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer c1.CloseNow()
	first := read(t, c1)
	def := codec.DefaultState().Bytes()
	if string(first) != string(def[:]) {
		t.Fatalf("state on connect %x, want %x", first, def)
	}
	c2 := dial(t, url)

	send(t, c1, codec.Update(codec.FieldRows, 40))
	if f := next(t, c1); f.Type != codec.TypeAck || codec.FrameType(f.Field) != codec.TypeUpdate {
		t.Fatalf("c1 got %v, want ACK of UPDATE", f.Type)
	}
	if f := next(t, c2); f.Type != codec.TypeUpdate || codec.FieldID(f.Field) != codec.FieldRows || f.Value != 40 {
		t.Fatalf("c2 got %+v, want UPDATE rows=40", f)
	}
	bulk, _ := codec.Bulk(codec.Entry{Field: codec.FieldTerminalMode, Value: 3}, codec.Entry{Field: codec.FieldCols, Value: 120})
	send(t, c2, bulk)
	if f := next(t, c2); f.Type != codec.TypeAck || codec.FrameType(f.Field) != codec.TypeBulk {
		t.Fatalf("c2 got %v, want ACK of BULK", f.Type)
	}
	if f := next(t, c1); f.Type != codec.TypeBulk || f.N != 2 {
		t.Fatalf("c1 got %+v, want a BULK of 2", f)
	}
	if s := st.State(); s.Rows != 40 || s.Cols != 120 || s.TerminalMode != 3 {
		t.Fatalf("state %v", s)
	}
	// A change from elsewhere (the bus, the admin API) reaches both.
	if _, err := st.Set(func() codec.State { s := st.State(); s.Rows = 50; return s }(), state.SourceBus); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*websocket.Conn{c1, c2} {
		if f := next(t, c); f.Type != codec.TypeUpdate || f.Value != 50 {
			t.Fatalf("after a bus change: %+v", f)
		}
	}
	send(t, c1, codec.Heartbeat(1))
	if f, _ := codec.DecodeFrame(read(t, c1)); f.Type != codec.TypeHeartbeat || f.Value < 1700000000000 {
		t.Fatalf("heartbeat answer %+v", f)
	}
}

func TestTimeoutClose(t *testing.T) {
	_, _, url := startServer(t, Options{HeartbeatInterval: 50 * time.Millisecond, ClientTimeout: 300 * time.Millisecond})
	c := dial(t, url)
	beats := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, b, err := c.Read(ctx)
		if err == nil {
			if f, err := codec.DecodeFrame(b); err == nil && f.Type == codec.TypeHeartbeat {
				beats++
			}
			continue
		}
		// Silent since connecting: the server closes with 1000 "Timeout".
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "Timeout" {
			t.Fatalf("close: %v, want 1000 Timeout", err)
		}
		break
	}
	if beats == 0 {
		t.Fatal("no heartbeats before the timeout")
	}
}

func TestEightHeartbeatsInOneSecond(t *testing.T) {
	_, _, url := startServer(t, Options{HeartbeatInterval: 100 * time.Millisecond})
	c := dial(t, url)
	beats := 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			break
		}
		if f, err := codec.DecodeFrame(b); err == nil && f.Type == codec.TypeHeartbeat {
			beats++
		}
	}
	if beats < 8 {
		t.Fatalf("%d heartbeats in one second at 100 ms, want at least 8", beats)
	}
}

func TestInvalidFramesAnsweredWithError(t *testing.T) {
	_, st, url := startServer(t, Options{HeartbeatInterval: time.Hour})
	c := dial(t, url)
	all, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	before := st.State()
	for _, v := range all.Frames {
		if v.Verdict == "ok" {
			continue
		}
		sendBytes(t, c, v.Bytes())
		f := next(t, c)
		r, _ := codec.ParseReason(v.Verdict)
		if f.Type != codec.TypeError || codec.ErrorCode(f.Field) != codec.ErrorCodeFor(r) || f.ErrorMessage() != v.Verdict {
			t.Errorf("%s: got %v %d %q", v.Name, f.Type, f.Field, f.ErrorMessage())
		}
		if st.State() != before {
			t.Fatalf("%s changed the state", v.Name)
		}
	}
	send(t, c, codec.Update(codec.FieldVersion, 2))
	if f := next(t, c); f.Type != codec.TypeError || codec.ErrorCode(f.Field) != codec.ErrCodeNotAllowed {
		t.Fatalf("version change: %+v", f)
	}
}

// TestSlowClientDoesNotBlockFast: a client that never reads is dropped when
// its queue overflows, and a fast client's updates all get their ACKs.
func TestSlowClientDoesNotBlockFast(t *testing.T) {
	srv, _, url := startServer(t, Options{HeartbeatInterval: time.Hour, QueueSize: 8, WriteTimeout: 200 * time.Millisecond})
	// The slow client: a tiny receive buffer, and it never reads.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
	}}
	slow, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Subprotocols: []string{Subprotocol},
		HTTPClient:   &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	fast := dial(t, url)
	acks := 0
	for i := 0; i < 20000; i++ {
		send(t, fast, codec.Update(codec.FieldRows, uint64(1+i%200)))
		if f := next(t, fast); f.Type == codec.TypeAck {
			acks++
		}
	}
	if acks != 20000 {
		t.Fatalf("%d of 20000 updates acknowledged", acks)
	}
	if promtest.ToFloat64(srv.dropped) < 1 {
		t.Fatal("the slow client was not dropped")
	}
	testutil.Eventually(t, 5*time.Second, "only the fast client to stay connected", func() bool { return srv.Clients() == 1 })
}

// TestWriteNeedsAdminTokenOffLoopback: on a listener that is not loopback,
// a client without an admin token may read but not write; one with a token
// of scope config:write may.
func TestWriteNeedsAdminTokenOffLoopback(t *testing.T) {
	h := testutil.NewHosts(t)
	st, err := state.Open(state.Options{Initial: codec.DefaultState()})
	if err != nil {
		t.Fatal(err)
	}
	keyFile, pubFile, err := token.GenerateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier([]string{pubFile}, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := token.ReadPrivateKey(keyFile)
	adminTok, _ := token.Issue(key, "", token.Claims{Scope: token.ScopeConfigWrite, RegisteredClaims: jwt.RegisteredClaims{
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}})
	srv := New(st, Options{HeartbeatInterval: time.Hour, Authorize: admin.TokenAuthorizer(v)}, quiet)
	var ln net.Listener
	testutil.In(t, h.B, func() {
		if ln, err = net.Listen("tcp", h.B4.String()+":3000"); err != nil {
			t.Fatal(err)
		}
	})
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer hs.Close()
	connect := func(header http.Header) *websocket.Conn {
		var c *websocket.Conn
		testutil.In(t, h.A, func() {
			// The TCP connection is made on this thread, inside A.
			conn, err := net.Dial("tcp", h.B4.String()+":3000")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, _, err = websocket.Dial(ctx, "ws://"+h.B4.String()+":3000"+Path, &websocket.DialOptions{
				Subprotocols: []string{Subprotocol},
				HTTPHeader:   header,
				HTTPClient: &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
					return conn, nil
				}}},
			})
			if err != nil {
				t.Fatal(err)
			}
		})
		t.Cleanup(func() { c.CloseNow() })
		read(t, c) // the state
		return c
	}
	anon := connect(nil)
	send(t, anon, codec.Update(codec.FieldRows, 40))
	if f := next(t, anon); f.Type != codec.TypeError || codec.ErrorCode(f.Field) != codec.ErrCodeNotAllowed || f.ErrorMessage() != "token" {
		t.Fatalf("write without a token: %+v", f)
	}
	if st.State().Rows != 24 {
		t.Fatal("the refused write changed the state")
	}
	authed := connect(http.Header{"Authorization": {"Bearer " + adminTok}})
	send(t, authed, codec.Update(codec.FieldRows, 40))
	if f := next(t, authed); f.Type != codec.TypeAck || st.State().Rows != 40 {
		t.Fatalf("write with an admin token: %+v, state %v", f, st.State())
	}
}

// dialAs connects from a given loopback source address with a given Host
// (and Origin, when set); it returns the connection or the refusal.
func dialAs(t *testing.T, url, from, host, origin string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	hdr := http.Header{}
	if origin != "" {
		hdr.Set("Origin", origin)
	}
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Subprotocols: []string{Subprotocol}, Host: host, HTTPHeader: hdr,
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: d.DialContext}},
	})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
		read(t, c) // the state
	}
	return c, resp, err
}

// TestLoopbackWritesNeedALoopbackHost: on a loopback listener, a client
// whose Host (or Origin) is another name, as after DNS rebinding, cannot
// change the state; with a loopback Host, or a configured name, it can.
func TestLoopbackWritesNeedALoopbackHost(t *testing.T) {
	_, st, url := startServer(t, Options{HeartbeatInterval: time.Hour, LoopbackHosts: []string{"edge.internal"}})
	port := url[strings.LastIndex(url, ":")+1 : strings.Index(url, Path)]
	for _, tc := range []struct {
		host, origin string
		write        bool
	}{
		{"evil.example:" + port, "", false},
		{"evil.example:" + port, "http://evil.example:" + port, false},
		{"127.0.0.1:" + port, "http://evil.example", false}, // refused by the Origin check: no connection
		{"localhost:" + port, "http://localhost:" + port, true},
		{"127.0.0.1:" + port, "", true},
		{"edge.internal:" + port, "", true},
	} {
		before := st.State().Rows
		c, resp, err := dialAs(t, url, "127.0.0.1", tc.host, tc.origin)
		if err != nil {
			if tc.origin == "" || strings.Contains(tc.origin, strings.Split(tc.host, ":")[0]) {
				t.Fatalf("Host %s Origin %q: %v", tc.host, tc.origin, err)
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("Host %s Origin %q: %v %v", tc.host, tc.origin, resp, err)
			}
			continue
		}
		send(t, c, codec.Update(codec.FieldRows, uint64(before)+1))
		f := next(t, c)
		if tc.write && (f.Type != codec.TypeAck || st.State().Rows != before+1) {
			t.Errorf("Host %s: a loopback-trusted write: %+v", tc.host, f)
		}
		if !tc.write && (f.Type != codec.TypeError || f.ErrorMessage() != "token" || st.State().Rows != before) {
			t.Errorf("Host %s Origin %q: a rebound write: %+v, rows %d", tc.host, tc.origin, f, st.State().Rows)
		}
	}
}

// TestClientCaps: past websocket.maxClientsPerIP or maxClients an upgrade
// is answered 503 naming the cap; a client that leaves makes room.
func TestClientCaps(t *testing.T) {
	srv, _, url := startServer(t, Options{HeartbeatInterval: time.Hour, MaxClients: 3, MaxClientsPerIP: 2})
	first, _, err := dialAs(t, url, "127.0.0.1", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dialAs(t, url, "127.0.0.1", "", ""); err != nil {
		t.Fatal(err)
	}
	_, resp, err := dialAs(t, url, "127.0.0.1", "", "")
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third client from one address: %v %v", resp, err)
	}
	if _, _, err := dialAs(t, url, "127.0.0.2", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, resp, err := dialAs(t, url, "127.0.0.3", "", ""); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("fourth client: %v %v", resp, err)
	}
	first.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, err := dialAs(t, url, "127.0.0.3", "", ""); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a client that left made no room")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if srv.Clients() != 3 {
		t.Fatalf("%d clients, cap 3", srv.Clients())
	}
}
