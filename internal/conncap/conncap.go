// Package conncap counts open connections (or clients) in total and per
// source address against two caps: the proxy's listener
// (proxy.maxConnections, proxy.maxConnectionsPerIP) and the WebSocket
// config server (websocket.maxClients, websocket.maxClientsPerIP) use it.
package conncap

import (
	"net/netip"
	"sync"
)

// The cap a connection would go over.
const (
	Total = "total"
	PerIP = "per_ip"
)

// Counter counts places taken, in total and per address. A cap at 0 or
// below is off. Safe for concurrent use.
type Counter struct {
	max, perIP int

	mu   sync.Mutex
	open int
	byIP map[netip.Addr]int
}

// New returns a Counter with the two caps.
func New(max, perIP int) *Counter {
	return &Counter{max: max, perIP: perIP, byIP: map[netip.Addr]int{}}
}

// Take counts a new place for ip and returns "", or returns the cap it
// would go over (Total or PerIP) and counts nothing.
func (c *Counter) Take(ip netip.Addr) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.max > 0 && c.open >= c.max:
		return Total
	case c.perIP > 0 && c.byIP[ip] >= c.perIP:
		return PerIP
	}
	c.open++
	c.byIP[ip]++
	return ""
}

// Release gives back a place Take counted for ip.
func (c *Counter) Release(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
	if n := c.byIP[ip] - 1; n > 0 {
		c.byIP[ip] = n
	} else {
		delete(c.byIP, ip) // an address with no place left costs nothing
	}
}
