package userproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/regedge/regedge/internal/testutil"
)

// frontEnd is how a test edge serves its proxy, as the agent does with
// proxy.fastPath on or off (internal/agent): fast is the fast front end,
// which hands what it does not serve (bodies, CONNECT, HTTP/2, unusual
// heads) to net/http; nethttp is net/http alone, the escape hatch.
type frontEnd string

const (
	fastFront    frontEnd = "fast"
	netHTTPFront frontEnd = "nethttp"
)

// onBothFrontEnds runs test once per front end, as subtests named after
// them, so that a regression in either shows. Where the two legitimately
// differ, test asserts each one's own behaviour (never skips one).
func onBothFrontEnds(t *testing.T, test func(t *testing.T, fe frontEnd)) {
	t.Helper()
	for _, fe := range []frontEnd{fastFront, netHTTPFront} {
		t.Run(string(fe), func(t *testing.T) { test(t, fe) })
	}
}

// serveFront serves p on a loopback port with front end fe, over TLS when
// tlsConf is set, configured as the agent configures it; the test's end
// shuts it down. It returns the listening address and the server's
// Shutdown (for tests of shutdown itself).
func serveFront(t testing.TB, p *Proxy, fe frontEnd, tlsConf *tls.Config) (string, func(context.Context) error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	std := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10,
		IdleTimeout: time.Minute, ConnContext: ConnContext}
	var serve func() error
	var shutdown func(context.Context) error
	switch fe {
	case fastFront:
		srv := &Server{Proxy: p, Fallback: std, TLSConfig: tlsConf, HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
		serve, shutdown = func() error { return srv.Serve(ln) }, srv.Shutdown
	case netHTTPFront:
		capped := p.CapListener(ln, tlsConf) // the fast front end applies the caps itself
		serve, shutdown = func() error { return std.Serve(capped) }, std.Shutdown
		if tlsConf != nil {
			std.TLSConfig = tlsConf
			serve = func() error { return std.ServeTLS(capped, "", "") }
		}
	default:
		t.Fatalf("unknown front end %q", fe)
	}
	done := make(chan error, 1)
	go func() { done <- serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			t.Errorf("%s front end shutdown: %v", fe, err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("%s front end: Serve returned %v", fe, err)
		}
	})
	return ln.Addr().String(), shutdown
}

// serveTLSFront serves p over TLS with a fresh self-signed certificate
// (through CertReloader, as the agent's proxy.tls) on front end fe; it
// returns the https base URL and the certificate's PEM for a client.
func serveTLSFront(t testing.TB, p *Proxy, fe frontEnd) (string, []byte) {
	t.Helper()
	certFile, keyFile := testutil.SelfSignedCert(t, t.TempDir(), "edge")
	certs, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveFront(t, p, fe, certs.TLSConfig())
	return "https://" + addr, pem
}
