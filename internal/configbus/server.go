// Package configbus is the UDP config bus of docs/protocol.md §3.1: the agent's
// server, which applies datagrams from allowed sources and answers with its
// resulting state, and the pusher behind `regedge config push`, which retries
// until every target reports the desired state.
//
// With BPF attached, XDP has already dropped invalid datagrams and those from
// sources off the allow-list; the server checks again anyway (the kernel is a
// first line, not the only one) and counts by the same reason words.
package configbus

import (
	"context"
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
// words: a source off the allow-list, and a valid change the agent refuses.
const (
	VerdictSource     = "source"
	VerdictNotAllowed = "notallowed"
	// VerdictStorage: a valid change the agent could not persist (ERROR
	// code 6); the pusher retries.
	VerdictStorage = "storage"
)

// Server answers config bus datagrams.
type Server struct {
	conn     *net.UDPConn
	store    *state.Store
	allow    []netip.Prefix
	log      *slog.Logger
	verdicts *prometheus.CounterVec
	now      func() time.Time
}

// NewServer serves conn (already bound, e.g. inside a namespace) with store.
// Only sources within allow may send; an empty list allows nobody.
func NewServer(conn *net.UDPConn, store *state.Store, allow []netip.Prefix, log *slog.Logger) *Server {
	s := &Server{
		conn: conn, store: store, allow: allow, log: log, now: time.Now,
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regedge_bus_datagrams_total", Help: "Config bus datagrams that reached userspace, by verdict.",
		}, []string{"verdict"}),
	}
	for r := codec.ReasonOK; r < codec.NumReasons; r++ {
		s.verdicts.WithLabelValues(r.String())
	}
	s.verdicts.WithLabelValues(VerdictSource)
	s.verdicts.WithLabelValues(VerdictNotAllowed)
	s.verdicts.WithLabelValues(VerdictStorage)
	return s
}

// Collector returns the server's metrics.
func (s *Server) Collector() prometheus.Collector { return s.verdicts }

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
// allowed, state-changing frame.
func (s *Server) Handle(b []byte, from netip.AddrPort) ([]byte, string) {
	if !s.allowed(from.Addr()) {
		return s.reply(codec.ErrorFrame(codec.ErrCodeNotAllowed, "source")), VerdictSource
	}
	versions := s.store.Versions()
	var d codec.Datagram
	if err := codec.DecodeDatagramInto(&d, b, &versions); err != nil {
		r, _ := codec.ReasonOf(err)
		return s.reply(codec.ErrorFrame(codec.ErrorCodeFor(r), r.String())), r.String()
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
