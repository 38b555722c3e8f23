// Command proxyload compares, in one run and on loopback only, the registry
// proxy against a direct connection, a plain httputil.ReverseProxy and nginx,
// all in front of the same fast origin. For each target it runs wrk
// (keep-alive, 64 connections) in alternating rounds and prints requests/s,
// p50/p99 latency, and the CPU time the proxy process spent per request; for
// regedge also its RSS over the run. Every run is bounded in time.
//
//	make build && go run ./bench/proxyload -rounds 3 -duration 5s
//
// It needs wrk and nginx (Debian packages) and bin/regedge.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "origin":
			exitOn(serveOrigin(os.Args[2]))
		case "plain":
			exitOn(servePlain(os.Args[2], os.Args[3]))
		}
	}
	rounds := flag.Int("rounds", 3, "alternating rounds per target")
	duration := flag.Duration("duration", 5*time.Second, "wrk duration per round")
	regedge := flag.String("regedge", "bin/regedge", "the regedge binary")
	flag.StringVar(&adminAddr, "admin", "127.0.0.1:0", "regedge's admin listener (set it to take a profile during the run)")
	flag.StringVar(&only, "only", "", "run only the targets whose name contains this")
	flag.Parse()
	exitOn(run(*rounds, *duration, *regedge))
}

// exitOn ends the process: status 1 with err on stderr, or 0.
func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxyload:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveOrigin answers every request with a 5 KB body, like a small packument.
func serveOrigin(addr string) error {
	body := []byte(`{"name":"left-pad","versions":{"1.3.0":{"dist":{"tarball":"x"}}},"pad":"` + strings.Repeat("x", 5000) + `"}`)
	return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
}

// servePlain is the baseline: httputil.ReverseProxy with a pooled transport.
func servePlain(addr, origin string) error {
	u, _ := url.Parse(origin)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	return http.ListenAndServe(addr, rp)
}

var adminAddr, only string

type target struct {
	name    string
	url     string
	pid     int // the proxy process whose CPU is counted; 0 for direct
	headers []string
}

type result struct {
	rps, p50, p99 float64 // p50/p99 in ms
	cpuPerReq     float64 // µs
	requests      float64
}

func freePort() string {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().String()
}

func waitUp(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not come up", addr)
}

func run(rounds int, duration time.Duration, regedgeBin string) error {
	for _, tool := range []string{"wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install wrk nginx", tool)
		}
	}
	self, _ := os.Executable()
	dir, err := os.MkdirTemp("", "regedge-proxyload")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }() // a temporary directory; nothing to do if it lingers
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			// Each target exits with a signal status: nothing to check.
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}
	}()
	start := func(name string, args ...string) (*exec.Cmd, error) {
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		procs = append(procs, cmd)
		return cmd, nil
	}

	originAddr := freePort()
	if _, err := start(self, "origin", originAddr); err != nil {
		return err
	}
	plainAddr := freePort()
	plain, err := start(self, "plain", plainAddr, "http://"+originAddr)
	if err != nil {
		return err
	}

	// regedge: tokens on, the token cached after the first request.
	keys := filepath.Join(dir, "keys")
	if out, err := exec.Command(regedgeBin, "token", "keygen", "--out", keys).CombinedOutput(); err != nil {
		return fmt.Errorf("token keygen: %v %s", err, out)
	}
	tok, err := exec.Command(regedgeBin, "token", "issue", "--key", filepath.Join(keys, "edge.key"), "--hash", "0xa1b2c3d4", "--sub", "bench", "--ttl", "1h").Output()
	if err != nil {
		return err
	}
	edgeAddr := freePort()
	oh, op, _ := net.SplitHostPort(originAddr)
	eh, ep, _ := net.SplitHostPort(edgeAddr)
	cfg := fmt.Sprintf(`{"proxy":{"listenHost":%q,"listenPort":%s,"upstreams":[{"host":%q,"port":%s,"hash":"0xa1b2c3d4","tls":false}],
"rateLimit":{"perMinute":1000000000}},"tokens":{"publicKeys":[%q]},"admin":{"listen":%q}}`,
		eh, ep, oh, op, filepath.Join(keys, "edge.pub"), adminAddr)
	cfgFile := filepath.Join(dir, "regedge.json")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return err
	}
	edge, err := start(regedgeBin, "proxy", "start", "--config", cfgFile)
	if err != nil {
		return err
	}

	// nginx with upstream keep-alive and the same two added headers.
	nginxAddr := freePort()
	nginxConf := filepath.Join(dir, "nginx.conf")
	conf, err := os.ReadFile("bench/proxyload/nginx.conf")
	if err != nil {
		return fmt.Errorf("%w (run from the repository's root)", err)
	}
	conf = []byte(strings.NewReplacer("@LISTEN@", nginxAddr, "@ORIGIN@", originAddr, "@DIR@", dir).Replace(string(conf)))
	if err := os.WriteFile(nginxConf, conf, 0o600); err != nil {
		return err
	}
	ngx, err := start("nginx", "-c", nginxConf, "-p", dir, "-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+";")
	if err != nil {
		return err
	}
	for _, a := range []string{originAddr, plainAddr, edgeAddr, nginxAddr} {
		if err := waitUp(a); err != nil {
			return err
		}
	}
	nginxPids := func() []int { return childPids(ngx.Process.Pid) }

	targets := []target{
		{name: "direct to origin", url: "http://" + originAddr + "/left-pad"},
		{name: "regedge (token, headers)", url: "http://" + edgeAddr + "/left-pad", pid: edge.Process.Pid,
			headers: []string{"Authorization: Bearer " + strings.TrimSpace(string(tok))}},
		{name: "httputil.ReverseProxy", url: "http://" + plainAddr + "/left-pad", pid: plain.Process.Pid},
		{name: "nginx keepalive 64", url: "http://" + nginxAddr + "/left-pad", pid: -1},
	}
	all := map[string][]result{}
	var rss []int
	if only != "" {
		var keep []target
		for _, t := range targets {
			if strings.Contains(t.name, only) {
				keep = append(keep, t)
			}
		}
		targets = keep
	}
	for r := 0; r < rounds; r++ {
		for _, t := range targets {
			pids := []int{t.pid}
			if t.pid == -1 {
				pids = append([]int{ngx.Process.Pid}, nginxPids()...)
			}
			before := cpuTicks(pids)
			res, err := wrk(t, duration)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if t.pid != 0 {
				res.cpuPerReq = float64(cpuTicks(pids)-before) * (1e6 / 100) / res.requests // clock ticks of 10 ms
			}
			if t.pid == edge.Process.Pid {
				rss = append(rss, rssKiB(t.pid))
			}
			all[t.name] = append(all[t.name], res)
		}
	}
	fmt.Printf("wrk -t2 -c64 -d%v, %d alternating rounds, medians; CPU is the proxy process's user+system time per request\n\n", duration, rounds)
	fmt.Printf("%-26s %12s %10s %10s %14s\n", "target", "req/s", "p50 ms", "p99 ms", "CPU us/req")
	for _, t := range targets {
		m := median(all[t.name])
		cpu := "-"
		if t.pid != 0 {
			cpu = fmt.Sprintf("%.1f", m.cpuPerReq)
		}
		fmt.Printf("%-26s %12.0f %10.2f %10.2f %14s\n", t.name, m.rps, m.p50, m.p99, cpu)
	}
	fmt.Printf("\nregedge RSS after each round (KiB): %v\n", rss)
	return nil
}

func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	return result{
		rps: pick(func(r result) float64 { return r.rps }), p50: pick(func(r result) float64 { return r.p50 }),
		p99: pick(func(r result) float64 { return r.p99 }), cpuPerReq: pick(func(r result) float64 { return r.cpuPerReq }),
	}
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reLat     = regexp.MustCompile(`\s+(50|99)%\s+([\d.]+)(us|ms|s)`)
	reRequest = regexp.MustCompile(`(\d+) requests in`)
)

func wrk(t target, d time.Duration) (result, error) {
	args := []string{"-t2", "-c64", "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency", "--timeout", "5s"}
	for _, h := range t.headers {
		args = append(args, "-H", h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk", append(args, t.url)...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	s := string(out)
	if strings.Contains(s, "Non-2xx") {
		return result{}, fmt.Errorf("non-2xx answers:\n%s", s)
	}
	var r result
	if m := reRPS.FindStringSubmatch(s); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reRequest.FindStringSubmatch(s); m != nil {
		r.requests, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range reLat.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if m[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	return r, nil
}

// cpuTicks sums utime+stime (clock ticks) of the processes.
func cpuTicks(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		sum += u + s
	}
	return sum
}

func rssKiB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmRSS:") {
			v, _ := strconv.Atoi(strings.Fields(sc.Text())[1])
			return v
		}
	}
	return 0
}

// childPids lists the children of pid (nginx's workers).
func childPids(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if v, err := strconv.Atoi(f); err == nil {
			out = append(out, v)
		}
	}
	return out
}
