package fleet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Options.
const (
	DefaultPort            = 4875
	DefaultResolveInterval = 10 * time.Second
	DefaultQueue           = 1024
	// A package is marked at most once per PackageInterval; within it,
	// one more mark is kept for later when a known peer asks (two writes
	// to one package in a row), none when an unknown source does.
	DefaultPackageInterval = time.Second
	// Per source address, and for all sources together (spoofed sources
	// are bounded by the latter).
	DefaultSourceRate  = 50
	DefaultSourceBurst = 200
	DefaultGlobalRate  = 500
	DefaultGlobalBurst = 1000
)

// The result label values of regedge_fleet_hints_total.
const (
	ResultOK        = "ok"        // sent: written to the socket; received: the package is marked (now)
	ResultError     = "error"     // sent: the socket refused the datagram (no route, family)
	ResultDropped   = "dropped"   // sent: the queue was full, or the name is not a package name
	ResultDeferred  = "deferred"  // received: marked again once the package's interval is over (a known peer)
	ResultDuplicate = "duplicate" // received: within the package's interval, nothing new to do
	ResultLimited   = "limited"   // received: over the source's or the global budget
	ResultMalformed = "malformed" // received: not a valid hint
	ResultVersion   = "version"   // received: a hint of another version (an upgrade in progress)
)

// Options configures a Fleet.
type Options struct {
	Peers           []Peer
	ResolveInterval time.Duration // 0: DefaultResolveInterval
	Resolver        Resolver      // nil: net.DefaultResolver
	// LocalAddrs lists this host's addresses (to leave itself out of the
	// peers); nil: only the socket's own address and loopback count.
	LocalAddrs func() ([]netip.Addr, error)
	// Mark marks the cached packuments and dist-tags of pkgs stale and
	// returns how many entries it marked; nil: received hints are
	// counted and dropped. It is called from one goroutine, with every
	// package that is due at once.
	Mark func(pkgs []string) int
	// Receive turns the receiving side on (the socket is fleet.listen).
	Receive bool
	Log     *slog.Logger

	Queue           int // 0: DefaultQueue
	PackageInterval time.Duration
	SourceRate      float64
	SourceBurst     int
	GlobalRate      float64
	GlobalBurst     int
}

// Fleet sends and receives hints on one UDP socket.
type Fleet struct {
	conn  *net.UDPConn
	opts  Options
	log   *slog.Logger
	queue chan string
	peers atomic.Pointer[peerSet]
	rx    *receiver
	ready chan struct{} // closed after the first resolution

	hints      *prometheus.CounterVec
	sent       map[string]prometheus.Counter
	received   map[string]prometheus.Counter
	peersGauge prometheus.Gauge
	marked     prometheus.Counter

	lastSendLog atomic.Int64
}

type peerSet struct {
	addrs []netip.AddrPort            // without this edge
	known map[netip.Addr]struct{}     // every resolved peer address
	names map[string][]netip.AddrPort // by dns: entry, for the next resolution
}

// New builds a Fleet on conn; Run serves it.
func New(conn *net.UDPConn, o Options) *Fleet {
	if o.ResolveInterval <= 0 {
		o.ResolveInterval = DefaultResolveInterval
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	f := &Fleet{conn: conn, opts: o, log: o.Log, queue: make(chan string, o.Queue), ready: make(chan struct{})}
	f.peers.Store(&peerSet{})
	f.hints = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "regedge_fleet_hints_total",
		Help: "Fleet revalidation hints, by direction (sent: per peer datagram; received) and result.",
	}, []string{"direction", "result"})
	f.sent, f.received = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	for _, r := range []string{ResultOK, ResultError, ResultDropped} {
		f.sent[r] = f.hints.WithLabelValues("sent", r)
	}
	for _, r := range []string{ResultOK, ResultDeferred, ResultDuplicate, ResultLimited, ResultMalformed, ResultVersion} {
		f.received[r] = f.hints.WithLabelValues("received", r)
	}
	f.peersGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "regedge_fleet_peers", Help: "Peers hints are sent to (resolved, this edge left out).",
	})
	f.marked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "regedge_fleet_marked_entries_total", Help: "Cache entries marked stale by fleet hints.",
	})
	f.rx = newReceiver(o)
	return f
}

// Collectors returns the fleet's metrics.
func (f *Fleet) Collectors() []prometheus.Collector {
	return []prometheus.Collector{f.hints, f.peersGauge, f.marked}
}

// Close closes the socket of a Fleet that will not Run.
func (f *Fleet) Close() error { return f.conn.Close() }

// Addr is the socket's address.
func (f *Fleet) Addr() netip.AddrPort {
	return f.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Peers returns the addresses hints go to now (this edge left out).
func (f *Fleet) Peers() []netip.AddrPort { return slices.Clone(f.peers.Load().addrs) }

// Notify queues a hint for pkg to every peer and returns at once: a full
// queue drops it (counted), it never waits.
func (f *Fleet) Notify(pkg string) {
	select {
	case f.queue <- pkg:
	default:
		f.sent[ResultDropped].Inc()
	}
}

// Run resolves the peers (at once, then every ResolveInterval), sends
// what Notify queued and, with Options.Receive, receives hints, until ctx
// is done. It closes the socket when it returns.
func (f *Fleet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.resolveLoop(ctx) }()
	go func() { defer wg.Done(); f.sendLoop(ctx) }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		f.conn.Close() // ends the read below
	}()
	var err error
	if f.opts.Receive {
		wg.Add(1)
		go func() { defer wg.Done(); f.markLoop(ctx) }()
		err = f.receiveLoop(ctx)
	}
	<-ctx.Done()
	wg.Wait()
	return err
}

func (f *Fleet) resolveLoop(ctx context.Context) {
	t := time.NewTicker(f.opts.ResolveInterval)
	defer t.Stop()
	for {
		f.resolve(ctx)
		select {
		case <-f.ready:
		default:
			close(f.ready)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resolve looks the peers up again and leaves this edge out.
func (f *Fleet) resolve(ctx context.Context) {
	prev := f.peers.Load()
	rctx, cancel := context.WithTimeout(ctx, max(f.opts.ResolveInterval, 5*time.Second))
	addrs, names, err := Resolve(rctx, f.opts.Resolver, f.opts.Peers, prev.names)
	cancel()
	if err != nil && ctx.Err() == nil {
		f.log.Warn("fleet: peers not resolved; the addresses of the last resolution are kept", "err", err)
	}
	self := Self{Bound: f.Addr()}
	if f.opts.LocalAddrs != nil {
		local, lerr := f.opts.LocalAddrs()
		if lerr != nil {
			f.log.Warn("fleet: local addresses not listed; only the socket's address counts as this edge", "err", lerr)
		}
		self.Local = local
	}
	ps := &peerSet{known: map[netip.Addr]struct{}{}, names: names}
	for _, ap := range addrs {
		ps.known[ap.Addr()] = struct{}{}
		if !self.Is(ap) {
			ps.addrs = append(ps.addrs, ap)
		}
	}
	if !slices.Equal(ps.addrs, prev.addrs) {
		f.log.Info("fleet: peers", "peers", ps.addrs)
	}
	f.peers.Store(ps)
	f.peersGauge.Set(float64(len(ps.addrs)))
}

func (f *Fleet) sendLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-f.ready:
	}
	buf := make([]byte, 0, MaxHintLen)
	for {
		select {
		case <-ctx.Done():
			return
		case pkg := <-f.queue:
			f.send(buf[:0], pkg)
		}
	}
}

func (f *Fleet) send(buf []byte, pkg string) {
	b, err := AppendHint(buf, pkg)
	if err != nil {
		f.sent[ResultDropped].Inc()
		f.log.Debug("fleet: no hint for a name that is not a package name", "package", pkg, "err", err)
		return
	}
	for _, ap := range f.peers.Load().addrs {
		// A socket that cannot take the datagram (its buffer full) costs
		// this loop at most the deadline, never the write that queued it.
		f.conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := f.conn.WriteToUDPAddrPort(b, ap); err != nil {
			f.sent[ResultError].Inc()
			f.warnSend(ap, err)
			continue
		}
		f.sent[ResultOK].Inc()
	}
}

// warnSend logs a failed send at most once every 30 s.
func (f *Fleet) warnSend(ap netip.AddrPort, err error) {
	now := time.Now().UnixNano()
	if last := f.lastSendLog.Load(); now-last < int64(30*time.Second) || !f.lastSendLog.CompareAndSwap(last, now) {
		return
	}
	f.log.Warn("fleet: hint not sent", "peer", ap, "err", err)
}

func (f *Fleet) receiveLoop(ctx context.Context) error {
	buf := make([]byte, MaxHintLen+1) // one more: a longer datagram is seen as too long
	for {
		n, src, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		f.handle(src, buf[:n])
	}
}

// handle judges one datagram and counts it.
func (f *Fleet) handle(src netip.AddrPort, b []byte) string {
	result := ResultOK
	pkg, err := DecodeHint(b)
	var he *HintError
	switch {
	case errors.As(err, &he) && he.Reason == ReasonVersion:
		result = ResultVersion
	case err != nil:
		result = ResultMalformed
	default:
		_, known := f.peers.Load().known[src.Addr().Unmap()]
		result = f.rx.accept(src.Addr().Unmap(), pkg, known, time.Now())
	}
	f.received[result].Inc()
	if err != nil {
		f.log.Debug("fleet: datagram refused", "from", src, "err", err)
	} else {
		f.log.Debug("fleet: hint", "from", src, "package", pkg, "result", result)
	}
	return result
}

// markLoop marks what the receiver has due, one pass over the cache for
// every package due at once.
func (f *Fleet) markLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		pkgs, next := f.rx.due(time.Now())
		if len(pkgs) > 0 && f.opts.Mark != nil {
			start := time.Now()
			n := f.opts.Mark(pkgs)
			f.marked.Add(float64(n))
			f.rx.passDone(time.Now(), time.Since(start))
			f.log.Debug("fleet: marked stale", "packages", pkgs, "entries", n)
			continue // more may have come due meanwhile
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-f.rx.wake:
		case <-t.C:
		}
		t.Stop() // Go 1.23 timers: nothing stale is left in t.C
	}
}

// SendOnce sends the hint for pkg to each address from conn, now (for
// `regedge cache purge --fleet`); it returns how many went out and the
// failures.
func SendOnce(conn *net.UDPConn, addrs []netip.AddrPort, pkg string) (int, error) {
	b, err := AppendHint(nil, pkg)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, ap := range addrs {
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := conn.WriteToUDPAddrPort(b, ap); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
