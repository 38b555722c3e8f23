package agent

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/testutil"
)

// TestProxyOverTLS: with proxy.tls the proxy serves HTTPS, HTTP/1.1 and
// HTTP/2, tarball URLs rewritten to https; Reload (SIGHUP) serves a new
// certificate on new connections and a broken one changes nothing.
func TestProxyOverTLS(t *testing.T) {
	for _, fast := range []bool{true, false} {
		t.Run(map[bool]string{true: "fast path", false: "net/http only"}[fast], func(t *testing.T) { proxyOverTLS(t, fast) })
	}
}

func proxyOverTLS(t *testing.T, fastPath bool) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"name":"left-pad","versions":{"1.3.0":{"dist":{"tarball":"http://`+r.Host+`/left-pad/-/left-pad-1.3.0.tgz"}}}}`)
	}))
	defer upstream.Close()
	dir := t.TempDir()
	certFile, keyFile := testutil.SelfSignedCert(t, dir, "first")
	cfg := config.Default()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Proxy.ListenHost, cfg.Proxy.ListenPort = "127.0.0.1", 0
	cfg.Proxy.TLS.Cert, cfg.Proxy.TLS.Key = certFile, keyFile
	cfg.Proxy.FastPath = fastPath
	cfg.Proxy.Upstreams = []config.Upstream{{Host: "127.0.0.1", Port: upstream.Listener.Addr().(*net.TCPAddr).Port, Hash: 0xa1b2c3d4}}
	a, cancel, done := serveProxyOnly(t, cfg)
	defer func() { cancel(); <-done }()
	base := "https://" + a.ProxyAddr().String()

	trusted, _ := os.ReadFile(certFile)
	fetch := func(h2 bool) (*http.Response, string) {
		t.Helper()
		resp, err := testutil.TLSClient(trusted, h2).Get(base + "/left-pad")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	want := `"tarball":"` + base + `/left-pad/-/left-pad-1.3.0.tgz"`
	for _, h2 := range []bool{false, true} {
		resp, b := fetch(h2)
		if resp.StatusCode != 200 || (resp.ProtoMajor == 2) != h2 || !strings.Contains(b, want) {
			t.Fatalf("h2 %v: %d %s %s", h2, resp.StatusCode, resp.Proto, b)
		}
	}
	// The HTTP/2 request was the fast path's to hand on; without the fast
	// path nothing is handed on.
	want2 := map[bool]string{true: "1", false: "0"}[fastPath]
	if got := metricValue(scrape(t, a, "/metrics"), "regedge_proxy_handed_on_total"); got != want2 {
		t.Fatalf("regedge_proxy_handed_on_total %s, want %s", got, want2)
	}
	first, _ := fetch(false)
	testutil.SelfSignedCert(t, dir, "second")
	trusted, _ = os.ReadFile(certFile)
	if err := a.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	second, _ := fetch(false)
	if first.TLS.PeerCertificates[0].Subject.CommonName != "first" || second.TLS.PeerCertificates[0].Subject.CommonName != "second" {
		t.Fatalf("certificates %s then %s, want first then second", first.TLS.PeerCertificates[0].Subject.CommonName, second.TLS.PeerCertificates[0].Subject.CommonName)
	}
	os.WriteFile(certFile, []byte("broken"), 0o600)
	if err := a.Reload(cfg); err == nil {
		t.Fatal("a broken certificate was accepted")
	}
	if resp, _ := fetch(false); resp.StatusCode != 200 {
		t.Fatalf("after a refused reload: %d", resp.StatusCode)
	}
}

// metricValue is a sample's value in a Prometheus text page, or "absent".
func metricValue(page, name string) string {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return "absent"
}
