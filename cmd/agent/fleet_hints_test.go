//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/fleet"
	"github.com/regedge/regedge/internal/npmclient/npmfixture"
	"github.com/regedge/regedge/internal/testutil"
	"github.com/regedge/regedge/internal/vethpair"
)

// nsHTTP is a client whose connections are made inside ns.
func nsHTTP(ns netns.NsHandle) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			var err error
			if inErr := vethpair.In(ns, func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) }); inErr != nil {
				return nil, inErr
			}
			return c, err
		},
	}}
}

// npmIn runs the real npm client inside ns, in dir, with its own HOME,
// cache and userconfig (npmrc: extra lines of it), and returns its output.
func npmIn(t *testing.T, ns netns.NsHandle, dir, npmrc string, args ...string) (string, error) {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		testutil.SkipOrFail(t, "npm is not installed (.ci/run installs nodejs and npm)")
	}
	home := t.TempDir()
	rc := filepath.Join(home, ".npmrc")
	if err := os.WriteFile(rc, []byte(npmrc), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, append(args, "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=warn")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+home, "npm_config_cache="+filepath.Join(home, "cache"), "npm_config_userconfig="+rc)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The child is forked from this (locked) thread: it lives in ns.
	testutil.In(t, ns, func() { err = cmd.Start() })
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	return out.String(), err
}

// npmProject makes an empty project directory.
func npmProject(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"proj","version":"1.0.0","private":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startCacheFleet starts one agent per spoke of a routed star, each with
// its kernel datapath, its own edge cache over upstream, and
// fleet.peers; resolver looks dns: peers up.
func startCacheFleet(t *testing.T, n int, upstream string, peers func(i int) []string, resolver fleet.Resolver) (*vethpair.Star, []*fleetAgent) {
	t.Helper()
	u, _ := netip.ParseAddrPort(strings.TrimPrefix(upstream, "http://"))
	star, agents, _ := startFleet(t, n, func(i int, f *fleetAgent) {
		f.cfg.Proxy.Upstreams = []config.Upstream{{Host: u.Addr().String(), Port: int(u.Port()), Hash: 0}}
		f.cfg.Proxy.Cache.Dir = t.TempDir()
		f.cfg.Fleet.Peers = peers(i)
		f.opts = []agent.Option{agent.WithFleetResolver(resolver)}
	})
	// Spoke to spoke (the hints between edges), once the edges serve.
	if err := star.Route(); err != nil {
		t.Fatal(err)
	}
	return star, agents
}

// TestFleetHintsKeepCachesCoherent is the CI shape: four edges
// with caches over one registry, in four namespaces, with the kernel
// datapath attached. A, B and C are one fleet (their peers: one dns: name
// whose records are the three, as a headless Service gives, and a fourth
// address that the network blackholes: a node that is gone); D is alone.
// All four have cached peers-hello@1.0.0 (npm installed it through each).
//
//   - npm publish of 1.0.1 through A completes (the blackholed peer does
//     not hold it up); within two seconds B and C have marked their cached
//     packuments stale, and npm install peers-hello@1.0.1 through each
//     succeeds with the published bytes. Through D (no hint) the same
//     install fails with ETARGET: the failure hints prevent.
//   - A hint forged from an address that is no peer, sent 50 times, makes
//     B revalidate its cached packument once (a conditional request, 304)
//     and serve the same bytes.
func TestFleetHintsKeepCachesCoherent(t *testing.T) {
	reg := npmfixture.New(t)
	reg.Add(fixturePackage("peers-hello", "1.0.0", nil))
	reg.Add(fixturePackage("peers-forged", "1.0.0", nil))
	dns := testutil.NewDNSServer(t)
	const name = "edges.fleet.test"
	gone := netip.MustParseAddrPort("203.0.113.9:4875")
	star, edges := startCacheFleet(t, 4, reg.URL, func(i int) []string {
		if i == 3 {
			return nil
		}
		return []string{"dns:" + name + ":4875", gone.String()}
	}, dns.Resolver())
	a, b, c, d := edges[0], edges[1], edges[2], edges[3]
	dns.Set(name+".", a.spoke.Addr, b.spoke.Addr, c.spoke.Addr)
	hh, err := netlink.NewHandleAt(star.Hub)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	if err := hh.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4(203, 0, 113, 0), Mask: net.CIDRMask(24, 32)}, Type: unix.RTN_BLACKHOLE}); err != nil {
		t.Fatal(err)
	}
	registry := func(f *fleetAgent) string { return fmt.Sprintf("http://%s:4873/", f.spoke.Addr) }
	testutil.Eventually(t, 10*time.Second, "A's peers: B, C and the gone node, not A", func() bool {
		return slices.Equal(a.agent.FleetPeers(), []netip.AddrPort{
			netip.AddrPortFrom(b.spoke.Addr, 4875), netip.AddrPortFrom(c.spoke.Addr, 4875), gone})
	})

	for _, f := range edges {
		if out, err := npmIn(t, f.spoke.NS, npmProject(t), "", "install", "--registry", registry(f), "peers-hello@1.0.0"); err != nil {
			t.Fatalf("warm %s: %v\n%s", f.spoke.Addr, err, out)
		}
	}

	src := t.TempDir()
	published := "module.exports = 'published through A'\n"
	os.WriteFile(filepath.Join(src, "package.json"), []byte(`{"name":"peers-hello","version":"1.0.1","main":"index.js"}`), 0o644)
	os.WriteFile(filepath.Join(src, "index.js"), []byte(published), 0o644)
	aHost := strings.TrimPrefix(strings.TrimSuffix(registry(a), "/"), "http:")
	out, err := npmIn(t, a.spoke.NS, src, "registry="+registry(a)+"\n"+aHost+"/:_authToken=fleet-test\n", "publish")
	if err != nil {
		t.Fatalf("npm publish through A: %v\n%s", err, out)
	}
	published1 := time.Now()

	clients := map[*fleetAgent]*http.Client{}
	for _, f := range edges {
		clients[f] = nsHTTP(f.spoke.NS)
	}
	marked := func(f *fleetAgent) float64 {
		return metric(t, clients[f], f.agent.AdminAddr().String(), markedSeries)
	}
	// The bound: seen everywhere within two seconds of the write.
	for !(marked(b) >= 1 && marked(c) >= 1) {
		if time.Since(published1) > 2*time.Second {
			t.Fatalf("2 s after the publish: B marked %v entries, C %v", marked(b), marked(c))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, f := range []*fleetAgent{b, c} {
		proj := npmProject(t)
		if out, err := npmIn(t, f.spoke.NS, proj, "", "install", "--registry", registry(f), "peers-hello@1.0.1"); err != nil {
			t.Fatalf("install 1.0.1 through %s: %v\n%s", f.spoke.Addr, err, out)
		}
		got, _ := os.ReadFile(filepath.Join(proj, "node_modules", "peers-hello", "index.js"))
		var pj struct{ Version string }
		pjb, _ := os.ReadFile(filepath.Join(proj, "node_modules", "peers-hello", "package.json"))
		json.Unmarshal(pjb, &pj)
		if string(got) != published || pj.Version != "1.0.1" {
			t.Fatalf("through %s: installed %s with index.js %q", f.spoke.Addr, pj.Version, got)
		}
	}
	out, err = npmIn(t, d.spoke.NS, npmProject(t), "", "install", "--registry", registry(d), "peers-hello@1.0.1")
	if err == nil || !strings.Contains(out, "ETARGET") {
		t.Fatalf("through D, which no hint reaches, the install should still see the cached 1.0.0 (ETARGET): %v\n%s", err, out)
	}

	aAdmin := a.agent.AdminAddr().String()
	if ok, bad := metric(t, clients[a], aAdmin, hintSeries("sent", "ok")), metric(t, clients[a], aAdmin, hintSeries("sent", "error"))+
		metric(t, clients[a], aAdmin, hintSeries("sent", "dropped")); ok != 3 || bad != 0 {
		t.Fatalf("A sent %v hints (%v failed or dropped), want 3: B, C and the gone node", ok, bad)
	}
	for _, f := range []*fleetAgent{a, d} {
		if n := metric(t, clients[f], f.agent.AdminAddr().String(), hintSeries("received", "ok")); n != 0 {
			t.Fatalf("%s received %v hints", f.spoke.Addr, n)
		}
	}

	// The forged hint.
	bc, bAdmin := clients[b], b.agent.AdminAddr().String()
	get := func() (string, string) {
		resp, err := bc.Get(registry(b) + "peers-forged")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET peers-forged: %d", resp.StatusCode)
		}
		return string(body), resp.Header.Get("X-Regedge-Cache")
	}
	first, _ := get()
	if again, state := get(); again != first || state != "hit" {
		t.Fatalf("peers-forged not cached: %s", state)
	}
	paths, _ := reg.Requests()
	before := len(paths)
	received := func() float64 {
		sum := 0.0
		for _, r := range []string{"ok", "deferred", "duplicate", "limited"} {
			sum += metric(t, bc, bAdmin, hintSeries("received", r))
		}
		return sum
	}
	recv0, ok0, dup0, marked0 := received(), metric(t, bc, bAdmin, hintSeries("received", "ok")),
		metric(t, bc, bAdmin, hintSeries("received", "duplicate")), marked(b)
	stranger := netip.MustParseAddr("198.51.100.1")
	if err := star.AddHubAddr(1, netip.PrefixFrom(stranger, 32)); err != nil {
		t.Fatal(err)
	}
	hint, _ := fleet.AppendHint(nil, "peers-forged")
	testutil.In(t, star.Hub, func() {
		s, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(stranger, 0)))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for i := 0; i < 50; i++ {
			s.WriteToUDPAddrPort(hint, netip.AddrPortFrom(b.spoke.Addr, 4875))
		}
	})
	testutil.Eventually(t, 10*time.Second, "B to judge the 50 forged hints and mark", func() bool {
		return received()-recv0 == 50 && marked(b)-marked0 == 1
	})
	if ok, dup := metric(t, bc, bAdmin, hintSeries("received", "ok"))-ok0, metric(t, bc, bAdmin, hintSeries("received", "duplicate"))-dup0; ok != 1 || dup != 49 {
		t.Fatalf("forged hints: %v ok, %v duplicate; want 1 and 49", ok, dup)
	}
	for i := 0; i < 3; i++ {
		if body, state := get(); body != first || state != "hit" {
			t.Fatalf("after the forged hint, request %d: %s, bytes changed: %v", i, state, body != first)
		}
	}
	paths, headers := reg.Requests()
	if len(paths)-before != 1 || paths[before] != "/peers-forged" || headers[before].Get("If-None-Match") == "" {
		t.Fatalf("after the forged hints the upstream saw %v, want one conditional GET /peers-forged", paths[before:])
	}
}
