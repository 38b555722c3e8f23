package userproxy

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/regedge/regedge/internal/token"
)

// tokenCache remembers verified tokens by a digest of the token (never the
// token itself), each entry expiring with its token; bounded in size.
type tokenCache struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]*token.Claims
	now func() time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: map[[32]byte]*token.Claims{}, now: time.Now}
}

func (c *tokenCache) get(tok string) (*token.Claims, bool) {
	if tok == "" {
		return nil, false
	}
	k := sha256.Sum256([]byte(tok))
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.m[k]
	if !ok {
		return nil, false
	}
	if cl.ExpiresAt == nil || !c.now().Before(cl.ExpiresAt.Time) {
		delete(c.m, k)
		return nil, false
	}
	return cl, true
}

func (c *tokenCache) put(tok string, cl *token.Claims) {
	k := sha256.Sum256([]byte(tok))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Full: drop expired entries, then (if still full) any one entry.
		now := c.now()
		for key, v := range c.m {
			if v.ExpiresAt == nil || !now.Before(v.ExpiresAt.Time) {
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
	c.m[k] = cl
}
