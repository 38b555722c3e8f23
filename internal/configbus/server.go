// Package configbus is the UDP config bus of docs/protocol.md §3.1: the agent's
// server, which applies datagrams from allowed sources and answers with its
// resulting state, and the pusher behind `regedge config push`, which retries
// until every target reports the desired state.
//
// With BPF attached, XDP has already dropped invalid datagrams and those from
// sources off the allow-list (and, with bus keys, those without a trailer);
// the server checks again anyway (the kernel is a first line, not the only
// one) and counts by the same reason words. Signatures are checked here only.
package configbus

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
)

// Verdict labels of regedge_bus_datagrams_total besides the codec's reason
// words: a source off the allow-list, a valid change the agent refuses, and
// the signature verdicts (docs/config-plane.md), in the order they are
// judged after the codec's.
const (
	VerdictSource     = "source"
	VerdictNotAllowed = "notallowed"
	// VerdictStorage: a valid change the agent could not persist (ERROR
	// code 6); the pusher retries.
	VerdictStorage   = "storage"
	VerdictUnsigned  = "unsigned"  // keys configured, no trailer
	VerdictStale     = "stale"     // timestamp more than MaxSkew from the agent's clock
	VerdictSignature = "signature" // no configured key verifies it
	VerdictReplay    = "replay"    // the same signature was accepted within ReplayWindow
)

const (
	// MaxSkew is how far a trailer's timestamp may be from the agent's clock.
	MaxSkew = 30 * time.Second
	// ReplayWindow is how long an accepted signature is remembered. A
	// datagram is fresh for at most 2*MaxSkew after it was signed, so a
	// replay after this long is stale anyway.
	ReplayWindow = 2 * MaxSkew
	// DefaultReplayCapacity bounds the replay memory: that many signed
	// datagrams per ReplayWindow (68 a second, far more than pushes and
	// heartbeats need). Beyond it, datagrams are refused as replay: an
	// agent that cannot remember cannot tell.
	DefaultReplayCapacity = 4096
)

// Options configure a Server.
type Options struct {
	// Allow lists the sources that may send; an empty list allows nobody.
	Allow []netip.Prefix
	// PublicKeys, when set, make the server accept only datagrams signed
	// with one of them (docs/protocol.md §3.1a).
	PublicKeys []ed25519.PublicKey
	// ReplayCapacity bounds the replay memory (default DefaultReplayCapacity).
	ReplayCapacity int
	// Now is the agent's clock (default time.Now).
	Now func() time.Time
}

// Server answers config bus datagrams.
type Server struct {
	conn     *net.UDPConn
	store    *state.Store
	allow    []netip.Prefix
	keys     []ed25519.PublicKey
	replay   *replayMemory
	log      *slog.Logger
	verdicts *prometheus.CounterVec
	ignored  prometheus.Counter
	now      func() time.Time
}

// NewServer serves conn (already bound, e.g. inside a namespace) with store.
func NewServer(conn *net.UDPConn, store *state.Store, opts Options, log *slog.Logger) *Server {
	s := &Server{
		conn: conn, store: store, allow: opts.Allow, keys: opts.PublicKeys, log: log, now: opts.Now,
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regedge_bus_datagrams_total", Help: "Config bus datagrams that reached userspace, by verdict.",
		}, []string{"verdict"}),
		ignored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regedge_bus_trailers_ignored_total",
			Help: "Signed datagrams judged without their signature, because bus.publicKeys is not set.",
		}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if len(s.keys) > 0 {
		n := opts.ReplayCapacity
		if n <= 0 {
			n = DefaultReplayCapacity
		}
		s.replay = newReplayMemory(n, ReplayWindow)
	}
	for r := codec.ReasonOK; r < codec.NumReasons; r++ {
		s.verdicts.WithLabelValues(r.String())
	}
	for _, v := range []string{VerdictSource, VerdictNotAllowed, VerdictStorage, VerdictUnsigned, VerdictStale, VerdictSignature, VerdictReplay} {
		s.verdicts.WithLabelValues(v)
	}
	return s
}

// Collectors returns the server's metrics.
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.verdicts, s.ignored}
}

// Serve reads datagrams until ctx is done or the socket is closed.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.conn.SetReadDeadline(time.Now())
	}()
	buf := make([]byte, 64*1024)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.log.Warn("config bus: read", "err", err)
			continue
		}
		reply, verdict := s.Handle(buf[:n], from)
		s.verdicts.WithLabelValues(verdict).Inc()
		if reply != nil {
			if _, err := s.conn.WriteToUDPAddrPort(reply, from); err != nil {
				s.log.Warn("config bus: reply", "to", from.String(), "err", err)
			}
		}
	}
}

// Handle judges one datagram from a source and returns the reply (nil for
// none) and the verdict label. It changes the state only for a valid,
// allowed (and, with keys, signed, fresh and new) state-changing frame.
//
// Nothing is ever sent to a source off the allow-list, nor, with keys, in
// answer to a datagram whose signature does not hold: a spoofed source gets
// neither a reflection nor the agent's state.
func (s *Server) Handle(b []byte, from netip.AddrPort) ([]byte, string) {
	if !s.allowed(from.Addr()) {
		return nil, VerdictSource
	}
	versions := s.store.Versions()
	var d codec.Datagram
	if err := codec.DecodeDatagramInto(&d, b, &versions); err != nil {
		r, _ := codec.ReasonOf(err)
		if len(s.keys) > 0 && !s.authentic(b) {
			return nil, r.String()
		}
		return s.reply(codec.ErrorFrame(codec.ErrorCodeFor(r), r.String())), r.String()
	}
	dg, trailer, _ := codec.SplitSigned(b) // DecodeDatagramInto passed: it splits
	if len(s.keys) > 0 {
		if v := s.verify(dg, trailer); v != "" {
			return nil, v
		}
	} else if trailer != nil {
		s.ignored.Inc()
	}
	switch d.Frame.Type {
	case codec.TypeUpdate, codec.TypeFeatureToggle, codec.TypeResize, codec.TypeBulk:
		if _, err := s.store.Apply(&d.Frame, state.SourceBus); err != nil {
			if errors.Is(err, state.ErrNotAllowed) {
				return s.reply(codec.ErrorFrame(codec.ErrCodeNotAllowed, "version")), VerdictNotAllowed
			}
			// The store has logged it at ERROR; the sender is told to retry.
			var se *state.StorageError
			if errors.As(err, &se) {
				return s.reply(codec.ErrorFrame(codec.ErrCodeStorage, se.Word())), VerdictStorage
			}
			s.log.Warn("config bus: apply", "from", from.String(), "err", err)
			return s.reply(codec.ErrorFrame(codec.ErrCodeInvalid, "apply")), codec.ReasonValue.String()
		}
		return s.reply(codec.Ack(d.Frame.Type)), codec.ReasonOK.String()
	case codec.TypeHeartbeat:
		return s.reply(codec.Heartbeat(s.now().UnixMilli())), codec.ReasonOK.String()
	}
	// ACK and ERROR from a peer are answers, never answered (no loops).
	return nil, codec.ReasonOK.String()
}

// verify applies the signature verdicts of §3.1a to a valid datagram, in
// order: unsigned, stale, signature, replay. It returns "" when the
// datagram may be applied; its signature is then remembered.
func (s *Server) verify(datagram, trailer []byte) string {
	if trailer == nil {
		return VerdictUnsigned
	}
	t, err := codec.ParseTrailer(trailer)
	if err != nil {
		return codec.ReasonLength.String() // SplitSigned gives 72 bytes: unreachable
	}
	now := s.now()
	if !t.Within(now, MaxSkew) {
		return VerdictStale
	}
	if !s.verifies(&t, datagram) {
		return VerdictSignature
	}
	switch s.replay.admit(&t.Signature, now) {
	case admitSeen:
		return VerdictReplay
	case admitFull:
		s.log.Warn("config bus: replay memory full: refusing signed datagrams until entries expire",
			"capacity", s.replay.capacity(), "window", ReplayWindow)
		return VerdictReplay
	}
	return ""
}

func (s *Server) verifies(t *codec.Trailer, datagram []byte) bool {
	for _, k := range s.keys {
		if t.Verify(datagram, k) {
			return true
		}
	}
	return false
}

// authentic reports whether an invalid datagram still carries a fresh
// trailer that a configured key verifies: only then, with keys, is it
// answered with an ERROR (the sender is ours and should hear why).
func (s *Server) authentic(b []byte) bool {
	dg, trailer, ok := codec.SplitSigned(b)
	if !ok || trailer == nil {
		return false
	}
	t, err := codec.ParseTrailer(trailer)
	return err == nil && t.Within(s.now(), MaxSkew) && s.verifies(&t, dg)
}

func (s *Server) reply(f codec.Frame) []byte {
	st := s.store.State()
	return codec.AppendDatagram(make([]byte, 0, codec.MinDatagramSize), st, &f)
}

func (s *Server) allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
