package wsconfig

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
	"github.com/regedge/regedge/internal/testutil"
)

const fleetClients = 1000

// fakeClients registers n clients whose queues the benchmark drains itself.
func fakeClients(srv *Server, n int) []*client {
	cs := make([]*client, n)
	for i := range cs {
		cs[i] = &client{send: make(chan []byte, 4), done: make(chan struct{})}
		srv.addLocked(cs[i])
	}
	return cs
}

func drainAll(cs []*client) {
	for _, c := range cs {
		for len(c.send) > 0 {
			<-c.send
		}
	}
}

// BenchmarkBroadcastLoop compares the server's broadcast (the frame encoded
// once, shared by every queue) with the naive loop a server might write
// (diff and encode per client), over 1000 clients, in the same run.
//
//	go test ./internal/wsconfig -run '^$' -bench BroadcastLoop -count 6
func BenchmarkBroadcastLoop(b *testing.B) {
	st, _ := state.Open(state.Options{Initial: codec.DefaultState()})
	states := [2]codec.State{codec.DefaultState(), codec.DefaultState()}
	states[1].Rows, states[1].Cols = 40, 120
	b.Run("shared", func(b *testing.B) {
		srv := New(st, Options{}, quiet)
		cs := fakeClients(srv, fleetClients)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			srv.broadcastLocked(states[i%2], nil)
			b.StopTimer()
			drainAll(cs)
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/fleetClients, "ns/client")
	})
	b.Run("naive", func(b *testing.B) {
		srv := New(st, Options{}, quiet)
		cs := fakeClients(srv, fleetClients)
		sent := srv.sent
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			next := states[i%2]
			for _, c := range srv.clients {
				diff, _ := codec.Diff(sent, next)
				srv.enqueue(c, diff.Bytes())
			}
			sent = next
			b.StopTimer()
			drainAll(cs)
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/fleetClients, "ns/client")
	})
}

// BenchmarkBroadcastDelivery1000 connects 1000 real WebSocket clients on
// loopback and measures the time from one update until every client has read
// it.
func BenchmarkBroadcastDelivery1000(b *testing.B) {
	srv, st, url := startServer(b, Options{HeartbeatInterval: time.Hour})
	conns := make([]*websocket.Conn, fleetClients)
	for i := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		conns[i] = c
	}
	testutil.Eventually(b, 10*time.Second, "every client to be connected", func() bool { return srv.Clients() == fleetClients })
	for _, c := range conns { // the state sent on connect
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, _, err := c.Read(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
	rows := uint64(30)
	b.ResetTimer()
	for b.Loop() {
		rows = 30 + (rows-29)%200
		var wg sync.WaitGroup
		wg.Add(len(conns))
		for _, c := range conns {
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c.Read(ctx)
			}()
		}
		s := st.State()
		s.Rows = uint8(rows)
		if _, err := st.Set(s, state.SourceCLI); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
	}
}

// TestMemoryPerClient measures the heap the server holds per connected
// client, with 1000 raw clients that completed the handshake and sit idle.
// It logs the figure for docs/benchmarks.md and fails above 64 KiB.
func TestMemoryPerClient(t *testing.T) {
	if testing.Short() {
		t.Skip("connects 1000 clients")
	}
	srv, _, url := startServer(t, Options{HeartbeatInterval: time.Hour})
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), Path)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	conns := make([]net.Conn, 0, fleetClients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < fleetClients; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
			Path, addr, Subprotocol)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake %d: %v %v", i, resp, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "every client to be connected", func() bool { return srv.Clients() == fleetClients })
	after := heap()
	// The raw clients' own conns are in the same heap: a net.Conn each.
	perClient := float64(after-before) / fleetClients
	t.Logf("heap per connected client: %.1f KiB (server and a raw test conn; %d clients)", perClient/1024, fleetClients)
	if perClient > 64*1024 {
		t.Fatalf("%.1f KiB per client, budget 64 KiB", perClient/1024)
	}
}
