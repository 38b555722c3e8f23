package configbus

import (
	"crypto/ed25519"
	"sync"
	"time"
)

// replayMemory remembers accepted signatures for a window, in a bounded
// amount of memory: a ring in acceptance order (so the oldest expire first)
// and a set for lookups. Only signatures that verified get in, so nobody
// without a key can fill it.
type replayMemory struct {
	mu     sync.Mutex
	window time.Duration
	seen   map[[ed25519.SignatureSize]byte]struct{}
	ring   []replayEntry
	head   int // oldest entry
	n      int // entries in use
}

type replayEntry struct {
	sig     [ed25519.SignatureSize]byte
	expires time.Time
}

type admitResult int

const (
	admitNew  admitResult = iota // recorded
	admitSeen                    // already recorded within the window
	admitFull                    // not recorded: every slot holds a live signature
)

func newReplayMemory(capacity int, window time.Duration) *replayMemory {
	return &replayMemory{
		window: window,
		seen:   make(map[[ed25519.SignatureSize]byte]struct{}, capacity),
		ring:   make([]replayEntry, capacity),
	}
}

func (m *replayMemory) capacity() int { return len(m.ring) }

// admit records sig as accepted at now, unless it is already recorded or
// there is no room.
func (m *replayMemory) admit(sig *[ed25519.SignatureSize]byte, now time.Time) admitResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.n > 0 && !m.ring[m.head].expires.After(now) {
		delete(m.seen, m.ring[m.head].sig)
		m.head = (m.head + 1) % len(m.ring)
		m.n--
	}
	if _, ok := m.seen[*sig]; ok {
		return admitSeen
	}
	if m.n == len(m.ring) {
		return admitFull
	}
	m.ring[(m.head+m.n)%len(m.ring)] = replayEntry{sig: *sig, expires: now.Add(m.window)}
	m.n++
	m.seen[*sig] = struct{}{}
	return admitNew
}

// len returns how many signatures are remembered.
func (m *replayMemory) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}
