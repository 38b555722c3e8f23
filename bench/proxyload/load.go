//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// run is one wrk run against one target, with what the proxy's processes
// spent on it.
type run struct {
	requests  float64 // completed (wrk's count)
	rps       float64
	p50, p99  float64 // ms, wrk --latency
	cpuPerReq float64 // µs of user+system CPU of the target's processes per completed request
	rssPeak   int64   // KiB: the highest of the sampled VmRSS and VmHWM (sum over the target's processes)
	non2xx    int64
	sockErrs  string  // wrk's socket errors line (connect, read, write, timeout), when there were any
	originPer float64 // requests the origin saw per completed request
	stopped   string  // why wrk was stopped early, if it was
	rssLimit  bool    // stopped because the target's RSS passed -max-rss
	round     int
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reLat     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	reRequest = regexp.MustCompile(`(\d+) requests in`)
	reNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	reSockErr = regexp.MustCompile(`Socket errors:\s+connect \d+, read \d+, write \d+, timeout \d+`)
)

type wrkOptions struct {
	threads, connections int
	duration             time.Duration
	timeout              time.Duration
	headers              []string
}

// wrkArgs is the wrk command line for url.
func wrkArgs(o wrkOptions, url string) []string {
	args := []string{"-t" + strconv.Itoa(o.threads), "-c" + strconv.Itoa(o.connections),
		"-d" + strconv.Itoa(int(o.duration.Round(time.Second)/time.Second)) + "s",
		"--latency", "--timeout", strconv.Itoa(int(o.timeout.Round(time.Second)/time.Second)) + "s"}
	for _, h := range o.headers {
		args = append(args, "-H", h)
	}
	return append(args, url)
}

// runWrk runs wrk; stop (when it fires) interrupts it with SIGINT, after
// which wrk still prints what it measured.
func runWrk(ctx context.Context, o wrkOptions, url string, stop <-chan string) (run, string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.duration+o.timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", wrkArgs(o, url)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return run{}, "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var why string
	var err error
	select {
	case err = <-done:
	case why = <-stop:
		_ = cmd.Process.Signal(syscall.SIGINT) // it may have exited already
		err = <-done
	}
	s := out.String()
	if err != nil && why != "" && !strings.Contains(s, "requests in") {
		// Interrupted before it had set up its own SIGINT handler, which
		// prints the report: nothing measured.
		return run{stopped: why}, s, nil
	}
	if err != nil {
		return run{}, s, fmt.Errorf("wrk: %v\n%s", err, s)
	}
	r, err := parseWrk(s)
	r.stopped = why
	return r, s, err
}

// parseWrk reads wrk's report (with --latency).
func parseWrk(s string) (run, error) {
	var r run
	m := reRequest.FindStringSubmatch(s)
	if m == nil {
		return run{}, fmt.Errorf("wrk printed no request count:\n%s", s)
	}
	r.requests, _ = strconv.ParseFloat(m[1], 64)
	if m := reRPS.FindStringSubmatch(s); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reNon2xx.FindStringSubmatch(s); m != nil {
		r.non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reSockErr.FindStringSubmatch(s); m != nil {
		r.sockErrs = strings.TrimSpace(m[0])
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

// clockTick is the unit of utime and stime in /proc/PID/stat.
var clockTick = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || v <= 0 {
		return 100
	}
	return v
}()

// cpuTicks is utime+stime of each process (all its threads), by pid.
func cpuTicks(pids []int) map[int]int64 {
	out := map[int]int64{}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = u + st
	}
	return out
}

// spent is the CPU ticks spent between two readings; a process present only
// in the second (a new nginx worker) counts from zero.
func spent(before, after map[int]int64) int64 {
	var sum int64
	for pid, t := range after {
		sum += t - before[pid]
	}
	return sum
}

// statusKiB reads a "Key:  N kB" line of /proc/PID/status.
func statusKiB(pid int, key string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// resetPeak sets each process's VmHWM back to its current RSS (clear_refs
// 5), so that VmHWM after the run is the run's peak. Not every kernel
// allows it; the sampled VmRSS stands in then.
func resetPeak(pids []int) {
	for _, pid := range pids {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) // best effort: the peak then covers the process's life
	}
}

// rssSampler samples the summed VmRSS of pids() every 50 ms and calls
// over (once, from its own goroutine) when the sum passes limit KiB.
type rssSampler struct {
	peak int64
	stop chan struct{}
	wg   sync.WaitGroup
}

func sampleRSS(pids func() []int, limit int64, over func(kib int64)) *rssSampler {
	s := &rssSampler{stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		signalled := false
		for {
			var sum int64
			for _, pid := range pids() {
				sum += statusKiB(pid, "VmRSS")
			}
			s.peak = max(s.peak, sum)
			if limit > 0 && sum > limit && !signalled {
				signalled = true
				over(sum)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the peak, also from VmHWM.
func (s *rssSampler) finish(pids []int) int64 {
	close(s.stop)
	s.wg.Wait()
	var hwm int64
	for _, pid := range pids {
		hwm += statusKiB(pid, "VmHWM")
	}
	return max(s.peak, hwm)
}

// descendants lists pid's children, grandchildren and so on (nginx's
// workers, cache manager and loader).
func descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p, p))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if v, err := strconv.Atoi(f); err == nil {
				out = append(out, v)
				queue = append(queue, v)
			}
		}
	}
	return out
}
