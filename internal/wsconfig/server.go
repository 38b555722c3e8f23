// Package wsconfig is the WebSocket config server of docs/protocol.md §3.2
// (subprotocol bun.config.v1, path /_ws/config), on github.com/coder/websocket.
//
// Every client gets the 13-byte state on connect and a HEARTBEAT every
// heartbeat interval; its frames are applied through the state store, ACKed,
// and the change is broadcast to every other client, encoded once. A client
// is closed with 1000 "Timeout" when silent for the client timeout, and
// dropped when it reads so slowly that its bounded send queue overflows:
// a slow client never blocks the others.
package wsconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/conncap"
	"github.com/regedge/regedge/internal/state"
)

// Subprotocol is the one subprotocol the server speaks.
const Subprotocol = "bun.config.v1"

// Path is where the server listens.
const Path = "/_ws/config"

// Authorizer decides whether a request may change the state. It is asked
// unless the request is loopback-trusted (admin.LoopbackTrusted: a loopback
// address and a loopback Host and Origin); nil refuses those writes.
type Authorizer func(r *http.Request) error

// Options configure a Server.
type Options struct {
	HeartbeatInterval time.Duration // default 100 ms
	ClientTimeout     time.Duration // default 30 s
	QueueSize         int           // frames buffered per client before it is dropped; default 256
	WriteTimeout      time.Duration // one write blocked longer drops the client; default 5 s
	Authorize         Authorizer
	// LoopbackHosts are Host names, besides localhost and loopback IP
	// literals, trusted for writes on a loopback address.
	LoopbackHosts []string
	// MaxClients and MaxClientsPerIP cap connected clients (0 = off); an
	// upgrade over a cap is answered 503. Each client costs its buffers,
	// queue and two goroutines, idle or not.
	MaxClients      int
	MaxClientsPerIP int
}

// Server serves WebSocket config clients.
type Server struct {
	store *state.Store
	opts  Options
	log   *slog.Logger

	mu      sync.Mutex  // guards clients and sent
	clients []*client   // a slice: a broadcast walks it faster than a map
	sent    codec.State // the state every client has been told

	connected prometheus.Gauge
	dropped   prometheus.Counter
	refused   prometheus.Counter

	caps *conncap.Counter // clients past the caps, connected or upgrading
}

type client struct {
	idx       int // position in Server.clients
	conn      *websocket.Conn
	send      chan []byte
	lastHeard atomic.Int64 // unix nanos
	canWrite  bool
	closeOnce sync.Once
	done      chan struct{}
}

// New returns a server over store.
func New(store *state.Store, opts Options, log *slog.Logger) *Server {
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 100 * time.Millisecond
	}
	if opts.ClientTimeout <= 0 {
		opts.ClientTimeout = 30 * time.Second
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 256
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	return &Server{
		store: store, opts: opts, log: log, sent: store.State(), caps: conncap.New(opts.MaxClients, opts.MaxClientsPerIP),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "regedge_ws_clients", Help: "Connected WebSocket config clients."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regedge_ws_dropped_total", Help: "WebSocket clients dropped because their send queue overflowed or a write timed out.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regedge_ws_refused_total", Help: "WebSocket upgrades answered 503 at websocket.maxClients or maxClientsPerIP.",
		}),
	}
}

// Collectors returns the server's metrics.
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.connected, s.dropped, s.refused}
}

// Clients is the number of connected clients.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// Run forwards changes made elsewhere (bus, admin API, CLI) to every client
// until ctx is done.
func (s *Server) Run(ctx context.Context) {
	ch := make(chan codec.State, 16)
	unsubscribe := s.store.Subscribe(ch)
	defer unsubscribe()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for _, c := range s.clients {
				c.close(websocket.StatusGoingAway, "server shutting down")
			}
			s.mu.Unlock()
			return
		case <-ch:
			s.mu.Lock()
			s.broadcastLocked(s.store.State(), nil)
			s.mu.Unlock()
		}
	}
}

// ServeHTTP upgrades a request on Path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	if !offers(r, Subprotocol) {
		http.Error(w, "Subprotocol bun.config.v1 required", http.StatusBadRequest)
		return
	}
	// Loopback trust needs the Host (and a browser's Origin) to name the
	// loopback too: a page whose name was re-pointed at 127.0.0.1 (DNS
	// rebinding) sends its own name, and gets a read-only connection here.
	canWrite := admin.LoopbackTrusted(r, s.opts.LoopbackHosts)
	if !canWrite {
		canWrite = s.opts.Authorize != nil && s.opts.Authorize(r) == nil
	}
	ip, rule := s.admit(r)
	if rule != "" {
		s.refused.Inc()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "5")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "{\"error\":\"Too many WebSocket clients\",\"rule\":%q}\n", rule)
		return
	}
	defer s.release(ip)
	// Accept checks that a browser's Origin, when sent, is on the Host.
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		return // Accept has answered
	}
	conn.SetReadLimit(1024) // the largest frame is 210 bytes
	c := &client{conn: conn, send: make(chan []byte, s.opts.QueueSize), canWrite: canWrite, done: make(chan struct{})}
	c.lastHeard.Store(time.Now().UnixNano())

	s.mu.Lock()
	st := s.store.State()
	first := st.Bytes()
	c.send <- first[:] // the 13-byte state, before any broadcast can reach this client
	s.addLocked(c)
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go s.writeLoop(ctx, c)
	s.readLoop(ctx, c)

	s.mu.Lock()
	s.removeLocked(c)
	s.mu.Unlock()
	c.close(websocket.StatusNormalClosure, "")
}

// admit takes a place for a new client under the caps, or returns the cap
// it would go over.
func (s *Server) admit(r *http.Request) (netip.Addr, string) {
	ip := netip.Addr{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		ip = ap.Addr().Unmap()
	}
	switch s.caps.Take(ip) {
	case conncap.Total:
		return ip, fmt.Sprintf("websocket.maxClients %d", s.opts.MaxClients)
	case conncap.PerIP:
		return ip, fmt.Sprintf("websocket.maxClientsPerIP %d", s.opts.MaxClientsPerIP)
	}
	return ip, ""
}

func (s *Server) release(ip netip.Addr) { s.caps.Release(ip) }

// close ends c with a close handshake (which waits for the peer, so never
// under a lock).
func (c *client) close(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		close(c.done)
		go c.conn.Close(code, reason)
	})
}

// drop ends a client that cannot keep up, at once: a close handshake would
// wait behind the data it is not reading.
func (s *Server) drop(c *client, why string) {
	c.closeOnce.Do(func() {
		close(c.done)
		s.dropped.Inc()
		s.log.Warn("websocket client dropped", "reason", why)
		go c.conn.CloseNow()
	})
}

// enqueue gives c a frame without blocking; a full queue drops c.
func (s *Server) enqueue(c *client, b []byte) {
	select {
	case c.send <- b:
	default:
		s.drop(c, "send queue full")
	}
}

func (s *Server) writeLoop(ctx context.Context, c *client) {
	tick := time.NewTicker(s.opts.HeartbeatInterval)
	defer tick.Stop()
	write := func(b []byte) bool {
		wctx, cancel := context.WithTimeout(ctx, s.opts.WriteTimeout)
		defer cancel()
		if err := c.conn.Write(wctx, websocket.MessageBinary, b); err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				s.drop(c, "write timed out")
			}
			return false
		}
		return true
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case b := <-c.send:
			if !write(b) {
				return
			}
		case now := <-tick.C:
			if now.Sub(time.Unix(0, c.lastHeard.Load())) > s.opts.ClientTimeout {
				c.close(websocket.StatusNormalClosure, "Timeout")
				return
			}
			hb := codec.Heartbeat(now.UnixMilli())
			if !write(hb.Bytes()) {
				return
			}
		}
	}
}

func (s *Server) readLoop(ctx context.Context, c *client) {
	for {
		typ, b, err := c.conn.Read(ctx)
		if err != nil {
			return
		}
		c.lastHeard.Store(time.Now().UnixNano())
		if typ != websocket.MessageBinary {
			s.enqueue(c, errorFrame(codec.ErrCodeUnknownType, "binary"))
			continue
		}
		s.handle(c, b)
	}
}

// handle answers one client frame.
func (s *Server) handle(c *client, b []byte) {
	var f codec.Frame
	if err := codec.DecodeFrameInto(&f, b); err != nil {
		r, _ := codec.ReasonOf(err)
		s.enqueue(c, errorFrame(codec.ErrorCodeFor(r), r.String()))
		return
	}
	switch f.Type {
	case codec.TypeUpdate, codec.TypeFeatureToggle, codec.TypeResize, codec.TypeBulk:
		if !c.canWrite {
			s.enqueue(c, errorFrame(codec.ErrCodeNotAllowed, "token"))
			return
		}
		// Under s.mu, so that Run sees s.sent already updated and does not
		// broadcast this change a second time.
		s.mu.Lock()
		next, err := s.store.Apply(&f, state.SourceWS)
		if err != nil {
			s.mu.Unlock()
			code, msg := codec.ErrCodeInvalid, "invalid"
			var se *state.StorageError
			switch {
			case errors.Is(err, state.ErrNotAllowed):
				code, msg = codec.ErrCodeNotAllowed, "version"
			case errors.As(err, &se): // logged by the store; the client may retry
				code, msg = codec.ErrCodeStorage, se.Word()
			}
			s.enqueue(c, errorFrame(code, msg))
			return
		}
		ack := codec.Ack(f.Type)
		s.enqueue(c, ack.Bytes())
		s.broadcastLocked(next, c)
		s.mu.Unlock()
	case codec.TypeHeartbeat:
		hb := codec.Heartbeat(time.Now().UnixMilli())
		s.enqueue(c, hb.Bytes())
	}
	// ACK and ERROR from a client need no answer.
}

// broadcastLocked tells every client but except the change from s.sent to
// next, as one UPDATE (one field changed) or BULK frame, encoded once.
func (s *Server) broadcastLocked(next codec.State, except *client) {
	diff, changed := codec.Diff(s.sent, next)
	s.sent = next
	if !changed {
		return
	}
	msg := diff.Bytes()
	if diff.N == 1 {
		u := codec.Update(diff.Entries[0].Field, diff.Entries[0].Value)
		msg = u.Bytes()
	}
	for _, c := range s.clients {
		if c != except {
			s.enqueue(c, msg)
		}
	}
}

func (s *Server) addLocked(c *client) {
	c.idx = len(s.clients)
	s.clients = append(s.clients, c)
	s.connected.Set(float64(len(s.clients)))
}

// removeLocked swaps the last client into c's place.
func (s *Server) removeLocked(c *client) {
	last := len(s.clients) - 1
	if c.idx > last || s.clients[c.idx] != c {
		return
	}
	s.clients[c.idx] = s.clients[last]
	s.clients[c.idx].idx = c.idx
	s.clients[last] = nil
	s.clients = s.clients[:last]
	s.connected.Set(float64(len(s.clients)))
}

func errorFrame(code codec.ErrorCode, msg string) []byte {
	f := codec.ErrorFrame(code, msg)
	return f.Bytes()
}

// offers reports whether the request lists proto in Sec-WebSocket-Protocol.
func offers(r *http.Request, proto string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == proto {
				return true
			}
		}
	}
	return false
}
