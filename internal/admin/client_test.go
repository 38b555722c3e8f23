package admin

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/state"
)

// purgingStatus is fakeStatus with a cache that purges n entries, or fails.
type purgingStatus struct {
	fakeStatus
	n   int
	err error
	got []string // package, version of the last purge
}

func (p *purgingStatus) PurgeCache(pkg, version string) (int, error) {
	p.got = []string{pkg, version}
	return p.n, p.err
}

// serve runs the admin handler over real HTTP on loopback.
func serve(t *testing.T, st Status) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "regedge_test_total", Help: "A counter for the client test."}))
	srv := httptest.NewServer(Handler(st, reg, time.Now(), nil))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestClientStateAndSetField(t *testing.T) {
	st, err := state.Open(state.Options{Initial: codec.DefaultState()})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, fakeStatus{st: st})
	ctx := context.Background()
	// Both spellings of the address reach the same agent.
	for _, a := range []string{addr, "http://" + addr + "/"} {
		t.Run(a, func(t *testing.T) {
			got, err := NewClient(a, 5*time.Second).State(ctx)
			if err != nil || got != st.State() {
				t.Fatalf("State = %v, %v; want %v", got, err, st.State())
			}
		})
	}
	c := NewClient(addr, 5*time.Second)
	dump, err := c.SetField(ctx, "rows", "40")
	if err != nil || dump != "0x01a1b2c3d40000000702285000" || st.State().Rows != 40 {
		t.Fatalf("SetField rows 40 = %q, %v; state %v", dump, err, st.State())
	}
	// A value that breaks a rule: refused, with the field named, nothing changed.
	if _, err := c.SetField(ctx, "rows", "0"); err == nil || !strings.Contains(err.Error(), "refused (400 Bad Request)") || !strings.Contains(err.Error(), "rows") {
		t.Fatalf("SetField rows 0: %v", err)
	}
	if st.State().Rows != 40 {
		t.Fatalf("rows %d after a refused change", st.State().Rows)
	}
}

func TestClientSetFieldStorageIsNotARefusal(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "statedir")
	st, err := state.Open(state.Options{Initial: codec.DefaultState(), File: filepath.Join(sub, "state")})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sub, nil, 0o600); err != nil { // the directory cannot be created
		t.Fatal(err)
	}
	c := NewClient(serve(t, fakeStatus{st: st}), 5*time.Second)
	_, err = c.SetField(context.Background(), "rows", "40")
	if err == nil || !strings.Contains(err.Error(), "could not persist the change (507 Insufficient Storage), nothing changed") {
		t.Fatalf("SetField with a broken state directory: %v", err)
	}
}

func TestClientPurgeCache(t *testing.T) {
	st, err := state.Open(state.Options{Initial: codec.DefaultState()})
	if err != nil {
		t.Fatal(err)
	}
	ps := &purgingStatus{fakeStatus: fakeStatus{st: st}, n: 3}
	c := NewClient(serve(t, ps), 5*time.Second)
	ctx := context.Background()
	n, err := c.PurgeCache(ctx, "@mycompany/hello", "1.2.3")
	if err != nil || n != 3 || ps.got[0] != "@mycompany/hello" || ps.got[1] != "1.2.3" {
		t.Fatalf("PurgeCache = %d, %v; the agent saw %q", n, err, ps.got)
	}
	ps.err = errors.New("the edge cache is off (proxy.cache.dir)")
	if _, err := c.PurgeCache(ctx, "left-pad", ""); err == nil || !strings.Contains(err.Error(), "409 Conflict: the edge cache is off") {
		t.Fatalf("PurgeCache with the cache off: %v", err)
	}
}

func TestClientMetrics(t *testing.T) {
	st, err := state.Open(state.Options{Initial: codec.DefaultState()})
	if err != nil {
		t.Fatal(err)
	}
	text, err := NewClient(serve(t, fakeStatus{st: st}), 5*time.Second).Metrics(context.Background())
	if err != nil || !strings.Contains(string(text), "regedge_test_total 0") {
		t.Fatalf("Metrics = %q, %v", text, err)
	}
}

func TestClientNamesTheAgent(t *testing.T) {
	srv := httptest.NewServer(nil) // answers 404 to everything
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	c := NewClient(addr, 5*time.Second)
	if _, err := c.State(context.Background()); err == nil || err.Error() != addr+" answered 404 Not Found" {
		t.Fatalf("State from a server that is not an agent: %v", err)
	}
	if _, err := c.Metrics(context.Background()); err == nil || err.Error() != addr+" answered 404 Not Found" {
		t.Fatalf("Metrics from a server that is not an agent: %v", err)
	}
}
