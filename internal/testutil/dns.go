package testutil

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is a real DNS server on loopback (UDP) answering A and AAAA
// questions from a table the test changes, the shape of a Kubernetes
// headless Service whose pods come and go. A name it does not know gets
// NXDOMAIN; with SetFail(true), every question gets SERVFAIL.
type DNSServer struct {
	conn *net.UDPConn
	mu   sync.Mutex
	recs map[string][]netip.Addr // by lower-case FQDN
	fail bool
	asks int
}

// NewDNSServer starts a server on 127.0.0.1, stopped at the test's end.
func NewDNSServer(t testing.TB) *DNSServer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &DNSServer{conn: c, recs: map[string][]netip.Addr{}}
	done := make(chan struct{})
	go func() { defer close(done); s.serve() }()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

// Set makes name (a FQDN, "edges.example.") answer addrs.
func (s *DNSServer) Set(name string, addrs ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[strings.ToLower(name)] = addrs
}

// SetFail makes every answer SERVFAIL (true) or not.
func (s *DNSServer) SetFail(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = fail
}

// Questions is how many questions the server was asked.
func (s *DNSServer) Questions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asks
}

// Resolver asks this server alone (from any network namespace: it dials
// the server's loopback address from the goroutine that resolves).
func (s *DNSServer) Resolver() *net.Resolver {
	addr := s.conn.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", addr)
	}}
}

func (s *DNSServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, src, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		s.mu.Lock()
		s.asks++
		addrs, found := s.recs[strings.ToLower(q.Name.String())]
		fail := s.fail
		s.mu.Unlock()
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
		switch {
		case fail:
			rh.RCode = dnsmessage.RCodeServerFailure
		case !found:
			rh.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		// The builder's errors come back from Finish, which is checked.
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		rrh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
		for _, a := range addrs {
			switch {
			case q.Type == dnsmessage.TypeA && a.Is4():
				_ = b.AResource(rrh, dnsmessage.AResource{A: a.As4()})
			case q.Type == dnsmessage.TypeAAAA && a.Is6():
				_ = b.AAAAResource(rrh, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
		if out, err := b.Finish(); err == nil {
			_, _ = s.conn.WriteToUDPAddrPort(out, src) // a test resolver: the client retries
		}
	}
}
