package fleet

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Bounds of the receiver's memory: sources and packages it remembers.
const (
	maxSources  = 4096
	maxPackages = 65536
	// A pass over the cache holds its lock; passes are spaced so that they
	// take at most 1/passSpacing of the time (5 %), whatever arrives.
	passSpacing = 20
	minPassGap  = 5 * time.Millisecond
)

// receiver decides what received hints do: the limits per source and in
// all, the interval per package, and the batch of packages due for the
// next pass over the cache.
type receiver struct {
	interval    time.Duration
	sourceRate  rate.Limit
	sourceBurst int

	mu       sync.Mutex
	global   *rate.Limiter
	sources  map[netip.Addr]*rate.Limiter
	pkgs     map[string]*pkgState
	pending  map[string]*pkgState // those with pending set: at most GlobalRate x interval of them
	batch    map[string]struct{}
	nextPass time.Time
	wake     chan struct{}
}

type pkgState struct {
	last    time.Time // when it was last put in a batch
	pending bool      // one more mark at last+interval
}

func newReceiver(o Options) *receiver {
	r := &receiver{
		interval: o.PackageInterval, sourceRate: rate.Limit(o.SourceRate), sourceBurst: o.SourceBurst,
		sources: map[netip.Addr]*rate.Limiter{}, pkgs: map[string]*pkgState{}, pending: map[string]*pkgState{},
		batch: map[string]struct{}{},
		wake:  make(chan struct{}, 1),
	}
	if r.interval <= 0 {
		r.interval = DefaultPackageInterval
	}
	if r.sourceRate <= 0 {
		r.sourceRate = DefaultSourceRate
	}
	if r.sourceBurst <= 0 {
		r.sourceBurst = DefaultSourceBurst
	}
	gr, gb := rate.Limit(o.GlobalRate), o.GlobalBurst
	if gr <= 0 {
		gr = DefaultGlobalRate
	}
	if gb <= 0 {
		gb = DefaultGlobalBurst
	}
	r.global = rate.NewLimiter(gr, gb)
	return r
}

// accept judges a valid hint for pkg from src at now and returns its
// result. known: src is one of the configured peers.
func (r *receiver) accept(src netip.Addr, pkg string, known bool, now time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	lim := r.sources[src]
	if lim == nil {
		if len(r.sources) >= maxSources {
			// Forgetting every source at once is crude but bounded; the
			// global budget still holds while they are relearnt.
			clear(r.sources)
		}
		lim = rate.NewLimiter(r.sourceRate, r.sourceBurst)
		r.sources[src] = lim
	}
	if !lim.AllowN(now, 1) || !r.global.AllowN(now, 1) {
		return ResultLimited
	}
	st := r.pkgs[pkg]
	if st == nil {
		if len(r.pkgs) >= maxPackages {
			r.sweep(now)
			if len(r.pkgs) >= maxPackages {
				return ResultLimited
			}
		}
		st = &pkgState{}
		r.pkgs[pkg] = st
	}
	switch {
	case st.last.IsZero() || now.Sub(st.last) >= r.interval:
		st.last, st.pending = now, false
		delete(r.pending, pkg)
		r.batch[pkg] = struct{}{}
		r.poke()
		return ResultOK
	case st.pending:
		return ResultDuplicate
	case known:
		// Two writes to one package in a row: the second may have come
		// after this edge revalidated for the first.
		st.pending = true
		r.pending[pkg] = st
		r.poke()
		return ResultDeferred
	}
	return ResultDuplicate
}

// sweep forgets packages whose interval is over and that wait for nothing.
func (r *receiver) sweep(now time.Time) {
	for k, st := range r.pkgs {
		if !st.pending && now.Sub(st.last) >= r.interval {
			delete(r.pkgs, k)
		}
	}
}

func (r *receiver) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// due returns the packages to mark now (none before the next pass may
// start), and when to ask again (zero: when poked).
func (r *receiver) due(now time.Time) (pkgs []string, next time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, st := range r.pending {
		if at := st.last.Add(r.interval); !at.After(now) {
			st.last, st.pending = now, false
			delete(r.pending, k)
			r.batch[k] = struct{}{}
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if len(r.batch) == 0 {
		return nil, next
	}
	if now.Before(r.nextPass) {
		if next.IsZero() || r.nextPass.Before(next) {
			next = r.nextPass
		}
		return nil, next
	}
	pkgs = make([]string, 0, len(r.batch))
	for k := range r.batch {
		pkgs = append(pkgs, k)
	}
	clear(r.batch)
	return pkgs, next
}

// passDone spaces the next pass after one that took took.
func (r *receiver) passDone(now time.Time, took time.Duration) {
	r.mu.Lock()
	r.nextPass = now.Add(max(minPassGap, passSpacing*took))
	r.mu.Unlock()
}
