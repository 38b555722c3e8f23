//go:build linux

package main

import (
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
)

// printTable writes the run's one table (markdown, to paste into
// docs/benchmarks.md) and the notes that qualify it.
func printTable(out io.Writer, o options, fx *fixtures, workloads []*workload, results map[*workload]map[*target][]run, headers []string) {
	wo := wrkOptions{threads: o.threads, connections: o.connections, duration: o.duration, timeout: o.timeout}
	fmt.Fprintf(out, "\n`wrk %s URL`, %d alternating rounds after a %v warm-up; medians over the rounds.\n",
		strings.Join(wrkArgs(wo, "")[:len(wrkArgs(wo, ""))-1], " "), o.rounds, o.warmup)
	fmt.Fprintf(out, "CPU/req: utime+stime of the proxy's processes (/proc/PID/stat; nginx: master and workers) per completed request.\n")
	fmt.Fprintf(out, "Ratios: regedge/nginx, the median of the per-round ratios (range over rounds).\n\n")
	fmt.Fprintln(out, "| workload | target | req/s | p50 ms | p99 ms | CPU µs/req | RSS peak MiB | origin/req |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|")
	var notes []string
	for _, w := range workloads {
		first := true
		for _, t := range w.targets {
			label := ""
			if first {
				label = w.title + " (`" + w.name + "`)"
				first = false
			}
			if err := w.wrong[t]; err != nil {
				fmt.Fprintf(out, "| %s | %s | answers wrongly, not measured | | | | | |\n", label, t.name)
				notes = append(notes, fmt.Sprintf("%s, %s: %v", w.name, t.name, err))
				continue
			}
			rs := results[w][t]
			col := func(f func(run) float64) float64 {
				v := make([]float64, len(rs))
				for i, r := range rs {
					v[i] = f(r)
				}
				return median(v)
			}
			// Per-request figures from the rounds that completed any.
			done := slices.DeleteFunc(slices.Clone(rs), func(r run) bool { return r.requests == 0 })
			colDone := func(f func(run) float64) float64 {
				v := make([]float64, len(done))
				for i, r := range done {
					v[i] = f(r)
				}
				return median(v)
			}
			completed := len(done)
			p50, p99, cpu, origin := "-", "-", "none completed", "-"
			if completed > 0 {
				p50 = fmt.Sprintf("%.2f", colDone(func(r run) float64 { return r.p50 }))
				p99 = fmt.Sprintf("%.2f", colDone(func(r run) float64 { return r.p99 }))
				cpu = fmt.Sprintf("%.1f", colDone(func(r run) float64 { return r.cpuPerReq }))
				origin = fmt.Sprintf("%.2f", colDone(func(r run) float64 { return r.originPer }))
				if completed < len(rs) {
					cpu += fmt.Sprintf(" (%d of %d rounds completed any)", completed, len(rs))
				}
			}
			rss := fmt.Sprintf("%.0f", col(func(r run) float64 { return float64(r.rssPeak) / 1024 }))
			if slices.ContainsFunc(rs, func(r run) bool { return r.rssLimit }) {
				rss = fmt.Sprintf("> %d (limit hit, stopped)", o.maxRSS)
			}
			fmt.Fprintf(out, "| %s | %s | %.0f | %s | %s | %s | %s | %s |\n", label, t.name,
				col(func(r run) float64 { return r.rps }), p50, p99, cpu, rss, origin)
			for _, r := range rs {
				switch {
				case r.requests == 0 && r.stopped == "":
					notes = append(notes, fmt.Sprintf("%s, %s, round %d: no request completed within %v at %d connections (each answer took longer than the run); a longer -duration or fewer -connections gives a CPU figure",
						w.name, t.name, r.round+1, o.duration, o.connections))
				case r.requests > 0 && r.requests < 10*float64(o.connections):
					// Each of the connections has a request in flight when
					// wrk stops; the work done on those is in the window
					// but they are not counted.
					notes = append(notes, fmt.Sprintf("%s, %s, round %d: %d requests completed with %d in flight at the end: CPU per request may be overstated by up to %.0f%%; a longer -duration narrows it",
						w.name, t.name, r.round+1, int64(r.requests), o.connections, 100*float64(o.connections)/r.requests))
				}
				if s := stoppedNote(r); s != "" {
					notes = append(notes, fmt.Sprintf("%s, %s, round %d: %d completed%s", w.name, t.name, r.round+1, int64(r.requests), s))
				}
			}
		}
		if row := ratioRow(w, results[w]); row != "" {
			fmt.Fprintln(out, row)
		}
		notes = append(notes, w.notes...)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Fixtures (origin on "+fx.originBase+"):")
	for _, s := range specs {
		p := fx.pkgs[s.name]
		fmt.Fprintf(out, "- %s: packument %d bytes (%d gzip'd), %d versions, tarballs of %d bytes\n",
			s.name, len(p.body), len(p.gz), len(p.versions), len(p.tarballs[p.versions[len(p.versions)-1]].body))
	}
	fmt.Fprintln(out, "Request headers (every target):")
	for _, h := range headers {
		if strings.HasPrefix(h, "Authorization:") {
			h = "Authorization: Bearer <token>"
		}
		fmt.Fprintln(out, "- "+h)
	}
	fmt.Fprintln(out, "- Accept: application/json (packuments), */* (tarballs)")
	fmt.Fprintln(out, "Notes:")
	fmt.Fprintln(out, "- regedge requires and checks a proxy token (verified once, then cached); nginx and go-rp check none.")
	fmt.Fprintln(out, "- nginx's RSS is summed over its processes, its shared cache zone counted in each.")
	fmt.Fprintln(out, "- go-rp: httputil.ReverseProxy rewriting as sub_filter does, a Go baseline (small packument only).")
	for _, n := range notes {
		fmt.Fprintln(out, "- "+n)
	}
	if v, err := exec.Command(o.regedge, "version").CombinedOutput(); err == nil {
		fmt.Fprintln(out, strings.SplitN(strings.TrimSpace(string(v)), "\n", 2)[0])
	}
	if v, err := exec.Command(nginxBin, "-v").CombinedOutput(); err == nil {
		fmt.Fprintln(out, strings.TrimSpace(string(v)))
	}
	if v, err := exec.Command("wrk", "-v").CombinedOutput(); err == nil {
		fmt.Fprintln(out, strings.SplitN(strings.TrimSpace(string(v)), "\n", 2)[0])
	}
}

// ratioRow is regedge/nginx for each column, the median of the per-round
// ratios and their range; "" when one of the two was not measured.
func ratioRow(w *workload, res map[*target][]run) string {
	var edge, ngx *target
	for _, t := range w.targets {
		if w.wrong[t] != nil {
			continue
		}
		switch t.name {
		case "regedge":
			edge = t
		case "nginx":
			ngx = t
		}
	}
	if edge == nil || ngx == nil {
		return ""
	}
	a, b := res[edge], res[ngx]
	// perRequest figures mean nothing for a run that completed nothing;
	// req/s does (0x).
	ratio := func(f func(run) float64, perRequest, rss bool) string {
		var v []float64
		atLeast := ""
		for i := 0; i < len(a) && i < len(b); i++ {
			x, y := f(a[i]), f(b[i])
			if y > 0 && (!perRequest || a[i].requests > 0 && b[i].requests > 0) {
				v = append(v, x/y)
				if a[i].rssLimit && rss {
					atLeast = "> " // regedge was stopped on its way up
				}
			}
		}
		if len(v) == 0 {
			return "n/a"
		}
		lo, hi := slices.Min(v), slices.Max(v)
		if len(v) == 1 || hi-lo < 0.005*hi {
			return fmt.Sprintf("%s%.2fx", atLeast, median(v))
		}
		return fmt.Sprintf("%s%.2fx (%.2f-%.2f)", atLeast, median(v), lo, hi)
	}
	return fmt.Sprintf("| | **regedge/nginx** | %s | %s | %s | %s | %s | |",
		ratio(func(r run) float64 { return r.rps }, false, false), ratio(func(r run) float64 { return r.p50 }, true, false),
		ratio(func(r run) float64 { return r.p99 }, true, false), ratio(func(r run) float64 { return r.cpuPerReq }, true, false),
		ratio(func(r run) float64 { return float64(r.rssPeak) }, false, true))
}
