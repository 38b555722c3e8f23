package userproxy

import (
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regedge/regedge/internal/token"
)

// tokenCache remembers verified tokens, keyed by a digest of the token
// (never the token itself): two 64-bit keyed hashes with per-process random
// seeds, a 128-bit digest an attacker cannot aim a collision at without the
// seeds, and fast enough to make a hit cost a fraction of a verification.
// Each entry expires with its token; the cache is bounded in size.
type tokenCache struct {
	mu    sync.RWMutex
	max   int
	seeds [2]maphash.Seed
	m     map[tokenKey]*cachedToken
	// nowNano is the clock entries expire by, in unix nanoseconds:
	// coarseClock (a test sets its own).
	nowNano func() int64
}

// coarseNow is the time in unix nanoseconds, updated every 100 ms: reading
// the clock on this VM costs more than the rest of a cache hit, and token
// expiry is in whole seconds anyway.
var (
	coarseOnce sync.Once
	coarseNow  atomic.Int64
)

func coarseClock() int64 {
	coarseOnce.Do(func() {
		coarseNow.Store(time.Now().UnixNano())
		go func() {
			for t := range time.Tick(100 * time.Millisecond) {
				coarseNow.Store(t.UnixNano())
			}
		}()
	})
	return coarseNow.Load()
}

type tokenKey struct{ a, b uint64 }

type cachedToken struct {
	claims  *token.Claims
	expires time.Time
	hashes  []uint32 // registryHash and registryHashes, parsed once
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		m: map[tokenKey]*cachedToken{}, nowNano: coarseClock}
}

// key is the digest: the first hash covers the whole token, the second its
// tail (the signature, unique to each signed token), with its own seed.
func (c *tokenCache) key(tok string) tokenKey {
	tail := tok
	if len(tail) > 64 {
		tail = tail[len(tail)-64:]
	}
	return tokenKey{maphash.String(c.seeds[0], tok), maphash.String(c.seeds[1], tail)}
}

func (c *tokenCache) get(tok string) (*cachedToken, bool) {
	if tok == "" {
		return nil, false
	}
	k := c.key(tok)
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok {
		return nil, false
	}
	if c.nowNano() >= e.expires.UnixNano() {
		c.mu.Lock()
		delete(c.m, k)
		c.mu.Unlock()
		return nil, false
	}
	return e, true
}

func (c *tokenCache) put(tok string, cl *token.Claims) *cachedToken {
	e := &cachedToken{claims: cl}
	if cl.ExpiresAt != nil {
		e.expires = cl.ExpiresAt.Time
	}
	for _, h := range append([]string{cl.RegistryHash}, cl.RegistryHashes...) {
		if v, ok := parseHash(h); ok {
			e.hashes = append(e.hashes, v)
		}
	}
	k := c.key(tok)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Full: drop expired entries, then (if still full) any one entry.
		now := time.Now()
		for key, v := range c.m {
			if !now.Before(v.expires) {
				delete(c.m, key)
			}
		}
		for key := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, key)
		}
	}
	c.m[k] = e
	return e
}

// allows reports whether the token is valid for a registry hash.
func (e *cachedToken) allows(hash uint32) bool {
	for _, h := range e.hashes {
		if h == hash {
			return true
		}
	}
	return false
}

// parseHash reads "0x" and 8 hex digits (either case).
func parseHash(s string) (uint32, bool) {
	if len(s) != 10 || !strings.HasPrefix(strings.ToLower(s), "0x") {
		return 0, false
	}
	v, err := strconv.ParseUint(s[2:], 16, 32)
	return uint32(v), err == nil
}
