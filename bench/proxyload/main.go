//go:build linux

// Command proxyload measures the registry proxy against nginx set up as
// people set it up in front of npm, on realistic fixtures, in one run, on
// loopback only, and prints one table with regedge/nginx ratios.
//
// Usage (from the repository root, after `make build`):
//
//	go run ./bench/proxyload -rounds 2 -duration 5s
//	go run ./bench/proxyload -workloads uncached-5k,cached-1m -rounds 3 -duration 10s
//	go run ./bench/proxyload -gzip    # clients send Accept-Encoding: gzip, as npm does
//
// It needs wrk and nginx with the sub module (Debian: apt-get install -y
// wrk nginx; it checks that nginx has sub_filter) and bin/regedge (make
// build).
//
// What it starts, all on 127.0.0.1 and all stopped when it ends (also on
// an error or Ctrl-C; each child also gets SIGTERM if the tool is killed,
// though a SIGKILL'd tool leaves its work directory,
// $TMPDIR/regedge-proxyload-*, behind):
//
//   - an origin registry (this program, "origin" subcommand, its own
//     process): packuments whose dist.tarball URLs are on the origin
//     (http://127.0.0.1:PORT/NAME/-/NAME-V.tgz), with dist.integrity and
//     shasum of the tarball bytes it serves, maintainers, a time map and a
//     readme; tarballs are real gzip'd tars (package/package.json, a README,
//     random bytes). It answers ETag and Last-Modified, 304 for
//     If-None-Match, gzip for packuments when asked. Fixtures:
//     bench-small (about 5 KB, 6 versions, 20 KiB tarballs), bench-media
//     (6 versions, 1 MiB tarballs), bench-1mb (about 1 MB, 1,400 versions),
//     bench-10mb (about 10 MB, 15,000 versions). They are generated from
//     fixed seeds; the tool builds them too and checks the origin's bytes.
//   - regedge (`regedge proxy start`, generated config), a fresh process for
//     each workload so that its RSS peak is that workload's: without
//     proxy.cache for the uncached workloads, with proxy.cache.dir for the
//     cached ones. It requires a proxy token (tokens.publicKeys); wrk sends
//     one (Authorization: Bearer), verified once and then cached by regedge.
//   - nginx (bench/proxyload/nginx.conf): an uncached server (keep-alive
//     proxy, upstream keepalive, sub_filter rewriting the origin's tarball
//     base to the edge's) and a cached one (proxy_cache with
//     proxy_cache_valid, proxy_cache_lock, proxy_cache_use_stale, the same
//     sub_filter per hit; tarballs from the cache by sendfile). nginx checks
//     no token: it has nothing that verifies regedge's tokens.
//   - go-rp (this program, "goproxy" subcommand): httputil.ReverseProxy
//     with the same rewrite as sub_filter, as a Go baseline, on the small
//     uncached packument only.
//
// Workloads (-workloads, comma-separated; all by default):
//
//	uncached-5k     GET /bench-small: regedge (no cache, token), nginx, go-rp
//	cached-1m       GET /bench-1mb from the caches
//	cached-tgz-20k  GET /bench-small/-/bench-small-1.0.5.tgz from the caches
//	cached-tgz-1m   GET /bench-media/-/bench-media-1.0.5.tgz from the caches
//	uncached-10m    GET /bench-10mb, no cache, for the RSS: regedge, nginx
//
// Before measuring, each target's answer is checked (status 200; every
// dist.tarball rebased onto the target's own base with its integrity kept;
// tarball bytes by SHA-512) and, for the cached targets, that a repeat is
// answered without asking the origin. A target that answers wrongly is not
// measured. Workloads run one after another: for each, a warm-up wrk run
// (-warmup) per target, then -rounds alternating rounds (the order of
// targets reversed every other round), each a wrk run of -duration with
// -connections connections, `wrk --latency` for p50/p99. Before every run
// the tool waits until no process of the run (origin, proxies) is still
// spending CPU on the previous one.
//
// Figures per run: req/s and latency (wrk); CPU per request, the
// utime+stime the target's processes spent during wrk's run (regedge's one
// process; nginx's master and all its workers) from /proc/PID/stat,
// divided by the requests wrk completed (each run starts once the previous
// one's CPU time has settled); RSS peak, VmHWM (reset with clear_refs
// before the run) and VmRSS sampled every 50 ms from the start of the run
// until the processes have settled after it (requests still in flight when
// wrk stops hold memory too), summed over the target's processes (for
// nginx that counts its shared cache zone once per process, an
// overstatement). CPU per request is only as good as the completed requests
// outnumber the -connections still in flight when wrk stops (their work so
// far is in the window, they are not counted): the notes give the bound
// where it matters; a longer -duration narrows it. "origin/req" is how many
// requests the origin saw per completed request: about 1 uncached, about 0
// cached. The table shows medians over the rounds and, for the ratios, the
// median of the per-round ratios with their range. If a target's RSS passes
// -max-rss, wrk is stopped early (regedge is killed at once and restarted
// for its next run) and the row says so.
//
// Each run is bounded: wrk runs -duration (plus its -timeout), every check
// has a timeout, and the whole run takes about
// (warmup + rounds*duration + a few seconds) per target and workload; the
// tool prints its estimate first.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

//go:embed nginx.conf
var nginxTemplate string

// The tool runs itself as the origin and as the go-rp baseline, so that
// their CPU is never counted as the tool's or a proxy's.
var subcommands = map[string]func(base string) error{"origin": serveOrigin, "goproxy": serveGoProxy}

func main() {
	if len(os.Args) > 2 && subcommands[os.Args[1]] != nil {
		err := subcommands[os.Args[1]](os.Args[2])
		fmt.Fprintln(os.Stderr, os.Args[1]+":", err)
		os.Exit(1)
	}
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "alternating rounds per workload")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "wrk duration per run (whole seconds)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured wrk run per target before the rounds (0: none)")
	flag.IntVar(&o.connections, "connections", 64, "wrk connections")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "wrk's per-request timeout")
	flag.StringVar(&o.regedge, "regedge", "bin/regedge", "the regedge binary (make build)")
	flag.StringVar(&o.workloads, "workloads", strings.Join(workloadNames, ","), "workloads to run, comma-separated")
	flag.StringVar(&o.targets, "targets", "regedge,nginx,go-rp", "targets to run, comma-separated")
	flag.BoolVar(&o.gzip, "gzip", false, "clients send Accept-Encoding: gzip (and nginx compresses JSON with gzip on)")
	flag.Int64Var(&o.maxRSS, "max-rss", 3072, "MiB: stop a run when the target's RSS passes this (0: no limit)")
	flag.StringVar(&o.adminAddr, "admin", "", "regedge's admin listener (default: a free port; set it to take a profile during the run)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs, caches) and print its path")
	flag.Parse()
	if err := runTool(o); err != nil {
		fmt.Fprintln(os.Stderr, "proxyload:", err)
		os.Exit(1)
	}
}

type options struct {
	rounds, connections, threads int
	duration, warmup, timeout    time.Duration
	regedge, workloads, targets  string
	adminAddr                    string
	gzip, keep                   bool
	maxRSS                       int64
}

// target is one proxy under test.
type target struct {
	name   string // regedge, nginx, go-rp
	base   string // http://127.0.0.1:PORT
	pids   func() []int
	proc   *child
	cached bool
	logs   []string // truncated after each run (access logs)
	// kill and restart, when set, replace a process that passed the RSS
	// limit (regedge; restarted on a new port with the same cache).
	kill    func()
	restart func() error
}

type workload struct {
	name, title string
	path        string
	pkg         string
	version     string // tarball workloads
	targets     []*target
	wrong       map[*target]error // answers that failed the check: not measured
	notes       []string
}

func (w *workload) tarball() bool { return w.version != "" }

var workloadNames = []string{"uncached-5k", "cached-1m", "cached-tgz-20k", "cached-tgz-1m", "uncached-10m"}

// nginxBin is the nginx to run, found by checkTools.
var nginxBin = "/usr/sbin/nginx"

func checkTools(o options) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk not found: it is a Debian package (apt-get install -y wrk)")
	}
	// Debian installs nginx in /usr/sbin, which a user's PATH may lack.
	if p, err := exec.LookPath("nginx"); err == nil {
		nginxBin = p
	} else if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
		return errors.New("nginx not found: it is a Debian package (apt-get install -y nginx)")
	}
	v, _ := exec.Command(nginxBin, "-V").CombinedOutput()
	if !bytes.Contains(v, []byte("http_sub_module")) {
		return errors.New("this nginx was built without the sub module (sub_filter, --with-http_sub_module); Debian's nginx package has it: apt-get install -y nginx")
	}
	if _, err := os.Stat(o.regedge); err != nil {
		return fmt.Errorf("%s not found: run `make build` at the repository root (or pass -regedge)", o.regedge)
	}
	return nil
}

func runTool(o options) error {
	if o.duration < time.Second || o.rounds < 1 || o.connections < 1 || o.threads < 1 {
		return errors.New("-duration must be at least 1s, -rounds, -connections and -threads at least 1")
	}
	if err := checkTools(o); err != nil {
		return err
	}
	selected := map[string]bool{}
	for _, n := range strings.Split(o.workloads, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(workloadNames, n) {
			return fmt.Errorf("unknown workload %q (have %s)", n, strings.Join(workloadNames, ", "))
		}
		selected[n] = true
	}
	wantTarget := map[string]bool{}
	for _, n := range strings.Split(o.targets, ",") {
		n = strings.TrimSpace(n)
		if n != "regedge" && n != "nginx" && n != "go-rp" {
			return fmt.Errorf("unknown target %q (have regedge, nginx, go-rp)", n)
		}
		wantTarget[n] = true
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "regedge-proxyload-")
	if err != nil {
		return err
	}
	// nginx's workers run as another user (nobody) when the tool runs as
	// root: they must reach their cache and temp directories in here.
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	var cs children
	cleanup := func() {
		cs.stopAll()
		if o.keep {
			fmt.Fprintln(os.Stderr, "proxyload: work directory kept:", dir)
		} else {
			_ = os.RemoveAll(dir) // a temporary directory
		}
	}
	defer cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "\nproxyload: %v: stopping the children\n", s)
		cleanup()
		os.Exit(130)
	}()
	ctx := context.Background()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "proxyload: "+format+"\n", args...) }

	// The origin first: the fixtures carry its address.
	originFile, originAddr, err := listen()
	if err != nil {
		return err
	}
	originBase := "http://" + originAddr + "/"
	origin, err := cs.start("origin", filepath.Join(dir, "origin.log"), []*os.File{originFile}, self, "origin", originBase)
	originFile.Close()
	if err != nil {
		return err
	}
	logf("building the fixtures (here and in the origin)")
	fx, err := buildFixtures(originBase)
	if err != nil {
		return err
	}
	if err := checkOrigin(fx, origin); err != nil {
		return err
	}

	// nginx and go-rp run throughout; regedge is started afresh for each
	// workload (stopped after it), so that its RSS peak is that
	// workload's and not what an earlier one left in the Go heap.
	var ngxUncached, ngxCached, goRP, edgeUncached, edgeCached *target
	var token string
	if wantTarget["regedge"] {
		if token, err = issueToken(o.regedge, dir); err != nil {
			return err
		}
		edgeUncached, edgeCached = &target{name: "regedge"}, &target{name: "regedge", cached: true}
	}
	var shared []*target
	if wantTarget["nginx"] {
		if ngxUncached, ngxCached, err = startNginx(&cs, o, dir, originAddr); err != nil {
			return err
		}
		shared = append(shared, ngxUncached)
	}
	if wantTarget["go-rp"] && selected["uncached-5k"] {
		f, addr, err := listen()
		if err != nil {
			return err
		}
		c, err := cs.start("go-rp", filepath.Join(dir, "goproxy.log"), []*os.File{f}, self, "goproxy", originBase)
		f.Close()
		if err != nil {
			return err
		}
		goRP = &target{name: "go-rp", base: "http://" + addr, proc: c, pids: func() []int { return []int{c.cmd.Process.Pid} }}
		shared = append(shared, goRP)
	}
	for _, t := range shared {
		if err := waitUp(t.proc, strings.TrimPrefix(t.base, "http://")); err != nil {
			return err
		}
	}

	small, media := fx.pkgs["bench-small"], fx.pkgs["bench-media"]
	all := []*workload{
		{name: "uncached-5k", title: fmt.Sprintf("uncached packument, %s, %d versions, rewrite", size(len(small.body)), len(small.versions)),
			path: "/bench-small", pkg: "bench-small", targets: []*target{edgeUncached, ngxUncached, goRP}},
		{name: "cached-1m", title: fmt.Sprintf("cached packument, %s, %d versions, rewrite", size(len(fx.pkgs["bench-1mb"].body)), len(fx.pkgs["bench-1mb"].versions)),
			path: "/bench-1mb", pkg: "bench-1mb", targets: []*target{edgeCached, ngxCached}},
		{name: "cached-tgz-20k", title: "cached tarball, " + size(len(small.tarballs["1.0.5"].body)),
			path: tarballPath("bench-small", "1.0.5"), pkg: "bench-small", version: "1.0.5", targets: []*target{edgeCached, ngxCached}},
		{name: "cached-tgz-1m", title: "cached tarball, " + size(len(media.tarballs["1.0.5"].body)),
			path: tarballPath("bench-media", "1.0.5"), pkg: "bench-media", version: "1.0.5", targets: []*target{edgeCached, ngxCached}},
		{name: "uncached-10m", title: fmt.Sprintf("uncached packument, %s, %d versions, rewrite", size(len(fx.pkgs["bench-10mb"].body)), len(fx.pkgs["bench-10mb"].versions)),
			path: "/bench-10mb", pkg: "bench-10mb", targets: []*target{edgeUncached, ngxUncached}},
	}
	var workloads []*workload
	for _, w := range all {
		if !selected[w.name] {
			continue
		}
		w.targets = slices.DeleteFunc(w.targets, func(t *target) bool { return t == nil })
		if len(w.targets) == 0 {
			continue
		}
		workloads = append(workloads, w)
	}

	headers := []string{"User-Agent: npm/10.2.4 node/v20.11.1 linux x64 workspaces/false"}
	if token != "" {
		// Sent to every target so that all read the same request; only
		// regedge checks it.
		headers = append(headers, "Authorization: Bearer "+token)
	}
	if o.gzip {
		headers = append(headers, "Accept-Encoding: gzip, deflate, br")
	}
	runs := 0
	for _, w := range workloads {
		runs += len(w.targets)
	}
	logf("%d workloads, %d target runs per round; about %v in all", len(workloads), runs,
		(time.Duration(runs) * (o.warmup + time.Duration(o.rounds)*(o.duration+2*time.Second) + 3*time.Second)).Round(time.Second))

	// every process of the run but the tool's: the origin and the proxies.
	var live []*target
	everyPid := func() []int {
		pids := []int{origin.cmd.Process.Pid}
		for _, t := range append(slices.Clone(shared), live...) {
			for _, p := range t.pids() {
				if !slices.Contains(pids, p) {
					pids = append(pids, p)
				}
			}
		}
		return pids
	}

	// One workload after the other (a heavy one's stragglers must not
	// fall into the next one's runs): check every answer, which also fills
	// the caches, warm up, then the alternating rounds.
	results := map[*workload]map[*target][]run{}
	for _, w := range workloads {
		wh := workloadHeaders(w, headers)
		w.wrong = map[*target]error{}
		results[w] = map[*target][]run{}
		live = nil
		for _, t := range w.targets {
			if t.name == "regedge" {
				if err := startRegedge(&cs, o, dir, w.name, originAddr, t); err != nil {
					return err
				}
				live = append(live, t)
			}
		}
		for _, t := range w.targets {
			note, err := checkAnswer(fx, w, t, wh)
			if err != nil {
				w.wrong[t] = err
				logf("%s on %s answers wrongly, not measured: %v", t.name, w.name, err)
				continue
			}
			if note != "" {
				w.notes = append(w.notes, t.name+": "+note)
			}
		}
		for r := -1; r < o.rounds; r++ {
			order := slices.Clone(w.targets)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, t := range order {
				if w.wrong[t] != nil || r < 0 && o.warmup < time.Second {
					continue
				}
				if t.proc.exited() {
					return fmt.Errorf("%s exited during the run: %s", t.name, t.proc.tail())
				}
				wo := wrkOptions{threads: o.threads, connections: o.connections, duration: o.duration, timeout: o.timeout, headers: wh}
				if r < 0 {
					wo.duration = o.warmup
				}
				res, _, err := measure(ctx, o, t, everyPid, wo, t.base+w.path)
				if err != nil {
					return fmt.Errorf("%s on %s: %v", t.name, w.name, err)
				}
				round := "warm-up"
				if r >= 0 {
					res.round = r
					results[w][t] = append(results[w][t], res)
					round = fmt.Sprintf("round %d", r+1)
				}
				logf("%-7s %-15s %-8s %9.0f req/s  p99 %8.2f ms  %9.1f us/req  RSS %5d MiB  origin/req %.2f%s",
					round, w.name, t.name, res.rps, res.p99, res.cpuPerReq, res.rssPeak>>10, res.originPer, stoppedNote(res))
			}
		}
		for _, t := range live {
			cs.stop(t.proc)
		}
	}
	printTable(os.Stdout, o, fx, workloads, results, headers)
	return nil
}

func stoppedNote(r run) string {
	var s []string
	if r.stopped != "" {
		s = append(s, "stopped: "+r.stopped)
	}
	if r.non2xx > 0 {
		s = append(s, fmt.Sprintf("%d non-2xx", r.non2xx))
	}
	if r.sockErrs != "" {
		s = append(s, r.sockErrs)
	}
	if len(s) == 0 {
		return ""
	}
	return "  (" + strings.Join(s, "; ") + ")"
}

func workloadHeaders(w *workload, common []string) []string {
	if w.tarball() {
		return append(slices.Clone(common), "Accept: */*")
	}
	return append(slices.Clone(common), "Accept: application/json")
}

func size(n int) string {
	switch {
	case n >= 1000<<10:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// measure is one wrk run against t with the CPU, RSS and origin requests it
// cost.
func measure(ctx context.Context, o options, t *target, everyPid func() []int, wo wrkOptions, url string) (run, string, error) {
	// Nothing else running: the previous run's stragglers would take CPU
	// from this one.
	settle(everyPid())
	pids := t.pids()
	resetPeak(pids)
	before := cpuTicks(pids)
	st0, err := originCounters()
	if err != nil {
		return run{}, "", err
	}
	// Past the RSS limit, wrk is stopped and a target that can be
	// restarted (regedge) is killed at once: on a shared machine it must
	// not grow on while its in-flight requests finish.
	over := make(chan string, 1)
	limitHit := ""
	sampler := sampleRSS(t.pids, o.maxRSS<<10, func(kib int64) {
		why := fmt.Sprintf("RSS passed the limit (%d MiB > %d MiB)", kib>>10, o.maxRSS)
		if t.kill != nil {
			t.kill()
			why += ", killed and restarted"
		}
		limitHit = why
		over <- why
	})
	res, out, err := runWrk(ctx, wo, url, over)
	if err != nil {
		sampler.finish(nil)
		return run{}, out, err
	}
	// The CPU of wrk's window: what requests still in flight when it
	// stopped had cost by then is counted, the rest of their work is not
	// (the next run starts once the CPU time has settled).
	after := cpuTicks(t.pids())
	// The memory of those requests is this run's though: the sampler (and
	// the RSS limit) stays on until the processes have settled.
	settle(everyPid())
	res.rssPeak = sampler.finish(t.pids())
	if limitHit != "" {
		res.rssLimit = true
		if res.stopped == "" {
			res.stopped = limitHit + " after wrk's run, with requests still in flight"
		}
		if t.restart != nil {
			if err := t.restart(); err != nil {
				return run{}, out, err
			}
		}
	}
	st1, err := originCounters()
	if err != nil {
		return run{}, out, err
	}
	if res.requests > 0 {
		res.cpuPerReq = float64(spent(before, after)) * 1e6 / clockTick / res.requests
		res.originPer = float64(st1.Requests-st0.Requests) / res.requests
	}
	truncateLogs(t)
	return res, out, nil
}

// settle waits (at most 5 s) until the processes' CPU time stops growing and
// returns the last reading.
func settle(pids []int) map[int]int64 {
	last := cpuTicks(pids)
	quiet := 0
	for i := 0; i < 50 && quiet < 2; i++ {
		time.Sleep(100 * time.Millisecond)
		now := cpuTicks(pids)
		if spent(last, now) <= 1 { // an idle process still ticks now and then
			quiet++
		} else {
			quiet = 0
		}
		last = now
	}
	return last
}

func truncateLogs(t *target) {
	for _, p := range t.logs {
		_ = os.Truncate(p, 0) // best effort
	}
}

var originAddrForStats string

func originCounters() (originStats, error) {
	var s originStats
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(originAddrForStats + statsPath)
	if err != nil {
		return s, fmt.Errorf("origin stats: %w", err)
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// checkOrigin waits for the origin to serve and compares its answers with
// the tool's own fixtures (the two processes built them from the same
// seeds), 304 and gzip included.
func checkOrigin(fx *fixtures, origin *child) error {
	originAddrForStats = strings.TrimSuffix(fx.originBase, "/")
	c := &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := originCounters(); err == nil {
			break
		}
		if origin.exited() || time.Now().After(deadline) {
			return fmt.Errorf("the origin did not come up: %s", origin.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	get := func(path string, h ...string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest("GET", originAddrForStats+path, nil)
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	for name, p := range fx.pkgs {
		resp, body, err := get("/" + name)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || !bytes.Equal(body, p.body) {
			return fmt.Errorf("origin's /%s differs from the tool's fixture (status %d, %d bytes, want %d)", name, resp.StatusCode, len(body), len(p.body))
		}
		etag := resp.Header.Get("Etag")
		if resp, _, err = get("/"+name, "If-None-Match", etag); err != nil || resp.StatusCode != http.StatusNotModified {
			return fmt.Errorf("origin: no 304 for If-None-Match on /%s (%v)", name, err)
		}
		resp, body, err = get("/"+name, "Accept-Encoding", "gzip")
		if err != nil || resp.Header.Get("Content-Encoding") != "gzip" {
			return fmt.Errorf("origin: no gzip for /%s (%v)", name, err)
		}
		if plain, err := gunzip(body); err != nil || !bytes.Equal(plain, p.body) {
			return fmt.Errorf("origin: gzip'd /%s is not the packument (%v)", name, err)
		}
		v := p.versions[len(p.versions)-1]
		resp, body, err = get(tarballPath(name, v))
		if err != nil {
			return err
		}
		if sum := sha512.Sum512(body); resp.StatusCode != 200 || !bytes.Equal(sum[:], mustSHA512(p.tarballs[v].body)) {
			return fmt.Errorf("origin's tarball %s@%s differs from the tool's fixture", name, v)
		}
	}
	return nil
}

func mustSHA512(b []byte) []byte {
	s := sha512.Sum512(b)
	return s[:]
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// checkAnswer asks t for w's resource as wrk will and judges the answer;
// for cached targets it then checks that repeats do not reach the origin.
// The note says how the answer differs from the ideal one where that is
// allowed (e.g. JSON re-encoded with its tarball URLs right).
func checkAnswer(fx *fixtures, w *workload, t *target, headers []string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
	get := func() (*http.Response, []byte, error) {
		req, _ := http.NewRequest("GET", t.base+w.path, nil)
		for _, h := range headers {
			k, v, _ := strings.Cut(h, ":")
			req.Header.Set(k, strings.TrimSpace(v))
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.Header.Get("Content-Encoding") == "gzip" {
			b, err = gunzip(b)
		}
		return resp, b, err
	}
	resp, body, err := get()
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %.300s", resp.StatusCode, body)
	}
	p := fx.pkgs[w.pkg]
	var note string
	if w.tarball() {
		if !bytes.Equal(mustSHA512(body), mustSHA512(p.tarballs[w.version].body)) {
			return "", fmt.Errorf("tarball bytes differ from the origin's (%d bytes, want %d)", len(body), len(p.tarballs[w.version].body))
		}
	} else {
		ideal := bytes.ReplaceAll(p.body, []byte(fx.originBase), []byte(t.base+"/"))
		if !bytes.Equal(body, ideal) {
			if err := checkRewritten(body, p, t.base); err != nil {
				return "", err
			}
			note = fmt.Sprintf("%s: tarball URLs right, but the body is not the origin's byte for byte (%d bytes, the origin's rewritten: %d)", w.name, len(body), len(ideal))
		}
	}
	if t.cached {
		st0, err := originCounters()
		if err != nil {
			return "", err
		}
		for i := 0; i < 3; i++ {
			if _, _, err := get(); err != nil {
				return "", err
			}
		}
		st1, err := originCounters()
		if err != nil {
			return "", err
		}
		if n := st1.Requests - st0.Requests; n > 0 {
			note = strings.TrimSpace(note + fmt.Sprintf(" %s: not answered from the cache (the origin saw %d of 3 repeats)", w.name, n))
		}
	}
	return note, nil
}

// checkRewritten: the body is the packument, every version's tarball URL on
// the edge's base and its integrity and shasum kept.
func checkRewritten(body []byte, p *packument, base string) error {
	var doc struct {
		Name     string `json:"name"`
		Versions map[string]struct {
			Dist struct {
				Tarball, Integrity, Shasum string
			} `json:"dist"`
		} `json:"versions"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("answer is not the packument: %v", err)
	}
	if doc.Name != p.name || len(doc.Versions) != len(p.versions) {
		return fmt.Errorf("answer has %d versions of %q, want %d of %q", len(doc.Versions), doc.Name, len(p.versions), p.name)
	}
	for _, v := range p.versions {
		d := doc.Versions[v].Dist
		want := base + tarballPath(p.name, v)
		if d.Tarball != want {
			return fmt.Errorf("version %s: tarball %q, want %q", v, d.Tarball, want)
		}
		if d.Integrity != p.tarballs[v].integrity || d.Shasum != p.tarballs[v].shasum {
			return fmt.Errorf("version %s: integrity or shasum changed", v)
		}
	}
	return nil
}

func issueToken(bin, dir string) (string, error) {
	keys := filepath.Join(dir, "keys")
	if out, err := exec.Command(bin, "token", "keygen", "--out", keys).CombinedOutput(); err != nil {
		return "", fmt.Errorf("regedge token keygen: %v: %s", err, out)
	}
	out, err := exec.Command(bin, "token", "issue", "--key", filepath.Join(keys, "edge.key"),
		"--hash", "0xa1b2c3d4", "--sub", "bench", "--ttl", "2h").Output()
	if err != nil {
		return "", fmt.Errorf("regedge token issue: %v", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// startRegedge runs `regedge proxy start` for one workload with a
// generated config: the origin as the only upstream, tokens required, no
// rate limit in reach, and the edge cache when t is a cached target. It
// fills in t and waits until regedge listens.
func startRegedge(cs *children, o options, dir, label, originAddr string, t *target) error {
	addr, err := freePort()
	if err != nil {
		return err
	}
	admin := "127.0.0.1:0"
	if o.adminAddr != "" {
		admin = o.adminAddr
	}
	host, port, _ := strings.Cut(addr, ":")
	oh, op, _ := strings.Cut(originAddr, ":")
	cfg := map[string]any{
		"proxy": map[string]any{
			"listenHost": host, "listenPort": json.Number(port),
			"upstreams": []any{map[string]any{"host": oh, "port": json.Number(op), "hash": "0xa1b2c3d4", "tls": false}},
			"rateLimit": map[string]any{"perMinute": 1000000000},
			"grace":     1000,
		},
		"tokens": map[string]any{"publicKeys": []string{filepath.Join(dir, "keys", "edge.pub")}},
		"admin":  map[string]any{"listen": admin},
	}
	if t.cached {
		cfg["proxy"].(map[string]any)["cache"] = map[string]any{"dir": filepath.Join(dir, "regedge-cache-"+label)}
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	file := filepath.Join(dir, "regedge-"+label+".json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "regedge-"+label+".log")
	c, err := cs.start("regedge "+label, logPath, nil, o.regedge, "proxy", "start", "--config", file)
	if err != nil {
		return err
	}
	pid := c.cmd.Process.Pid
	t.base, t.proc, t.logs = "http://"+addr, c, []string{logPath}
	t.pids = func() []int { return []int{pid} }
	t.kill = func() { _ = c.cmd.Process.Kill() }
	t.restart = func() error {
		cs.stop(c)
		return startRegedge(cs, o, dir, label, originAddr, t)
	}
	return waitUp(c, addr)
}

// startNginx fills in nginx.conf, checks it with nginx -t and runs nginx
// in the foreground: one nginx, two servers (uncached, cached).
func startNginx(cs *children, o options, dir, originAddr string) (*target, *target, error) {
	uncached, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	cached, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	gz := ""
	if o.gzip {
		gz = "    gzip on;\n    gzip_types application/json;\n    gzip_proxied any;\n    gzip_vary on;\n"
	}
	conf := strings.NewReplacer("@DIR@", dir, "@ORIGIN@", originAddr, "@UNCACHED@", uncached,
		"@CACHED@", cached, "@GZIP@", gz).Replace(nginxTemplate)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		return nil, nil, err
	}
	errLog := filepath.Join(dir, "nginx-error.log")
	if out, err := exec.Command(nginxBin, "-t", "-q", "-p", dir, "-c", file, "-e", errLog).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("nginx -t: %v: %s", err, out)
	}
	c, err := cs.start("nginx", filepath.Join(dir, "nginx.out"), nil, nginxBin, "-p", dir, "-c", file, "-e", errLog)
	if err != nil {
		return nil, nil, err
	}
	master := c.cmd.Process.Pid
	c.extra = func() []int { return descendants(master) }
	pids := func() []int { return append([]int{master}, descendants(master)...) }
	logs := []string{filepath.Join(dir, "nginx-access.log")}
	c.logPath = errLog
	return &target{name: "nginx", base: "http://" + uncached, proc: c, pids: pids, logs: logs},
		&target{name: "nginx", base: "http://" + cached, proc: c, pids: pids, logs: logs, cached: true}, nil
}

// median of the values (the mean of the middle two for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
