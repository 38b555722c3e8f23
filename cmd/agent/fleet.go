package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/configbus"
)

// The fleet side of the config commands: many targets, a table that stays
// readable at 500 of them, and JSON for scripts.

// maxListed is how many targets a table lists one by one before it lists
// only the ones that need attention (--verbose lists them all).
const maxListed = 20

// readTargets joins --to (comma-separated) and --targets-file (one
// HOST:PORT a line; blank lines and # comments skipped), keeping the first
// of duplicates.
func readTargets(to, file string) ([]string, error) {
	all := config.SplitList(to)
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, usageErr("--targets-file: %v", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line, _, _ := strings.Cut(sc.Text(), "#")
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			if strings.ContainsAny(line, " \t,") {
				return nil, usageErr("--targets-file %s:%d: %q: want one HOST:PORT per line", file, n, line)
			}
			all = append(all, line)
		}
		if err := sc.Err(); err != nil {
			return nil, usageErr("--targets-file: %v", err)
		}
	}
	seen := map[string]bool{}
	out := all[:0]
	for _, t := range all {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}

// targetResult is one target in the JSON output.
type targetResult struct {
	Target    string `json:"target"`
	Attempts  int    `json:"attempts"`
	Reported  string `json:"reported,omitempty"` // the dump; absent without an answer
	Converged *bool  `json:"converged,omitempty"`
	Error     string `json:"error,omitempty"`
}

// stateGroup is the targets that reported one state (State "" for no
// answer).
type stateGroup struct {
	State     string   `json:"state"`
	Agents    int      `json:"agents"`
	Converged int      `json:"converged"`
	Targets   []string `json:"targets"`
}

// groupByState groups results by the state they reported, the largest
// group first.
func groupByState(results []configbus.Result, push bool) []stateGroup {
	byState := map[string]*stateGroup{}
	var order []*stateGroup
	for _, r := range results {
		key := ""
		if r.HasReport {
			key = r.Reported.Dump()
		}
		g := byState[key]
		if g == nil {
			g = &stateGroup{State: key}
			byState[key] = g
			order = append(order, g)
		}
		g.Agents++
		g.Targets = append(g.Targets, r.Target)
		if push && r.Converged {
			g.Converged++
		}
	}
	sort.SliceStable(order, func(i, j int) bool {
		if (order[i].State == "") != (order[j].State == "") {
			return order[j].State == "" // no answer last
		}
		return order[i].Agents > order[j].Agents
	})
	out := make([]stateGroup, len(order))
	for i, g := range order {
		out[i] = *g
	}
	return out
}

func toTargetResults(results []configbus.Result, push bool) []targetResult {
	out := make([]targetResult, len(results))
	for i, r := range results {
		out[i] = targetResult{Target: r.Target, Attempts: r.Attempts, Error: r.Err}
		if r.HasReport {
			out[i].Reported = r.Reported.Dump()
		}
		if push {
			c := r.Converged
			out[i].Converged = &c
		}
	}
	return out
}

// fleetReport is the JSON of config push and config get --bus.
type fleetReport struct {
	Command   string         `json:"command"` // push or get
	Pushed    []string       `json:"pushed,omitempty"`
	Total     int            `json:"total"`
	Converged *int           `json:"converged,omitempty"` // push
	Answered  int            `json:"answered"`
	Groups    []stateGroup   `json:"groups"`
	Results   []targetResult `json:"results"`
}

func writeFleetJSON(w io.Writer, r fleetReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeFleetTable prints the targets (all of them when few or verbose,
// else those that need attention: no convergence for a push, no answer
// for a query), then the targets grouped by the state they reported.
func writeFleetTable(w io.Writer, results []configbus.Result, push, verbose bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	all := verbose || len(results) <= maxListed
	needs := func(r configbus.Result) bool {
		if push {
			return !r.Converged
		}
		return !r.HasReport || r.Err != ""
	}
	if push {
		fmt.Fprintln(tw, "TARGET\tATTEMPTS\tREPORTED\tCONVERGED\tERROR")
	} else {
		fmt.Fprintln(tw, "TARGET\tATTEMPTS\tREPORTED\tERROR")
	}
	hidden := 0
	for _, r := range results {
		if !all && !needs(r) {
			hidden++
			continue
		}
		dump, errText := "-", r.Err
		if r.HasReport {
			dump = r.Reported.Dump()
		}
		if errText == "" {
			errText = "-"
		}
		if push {
			conv := "yes"
			if !r.Converged {
				conv = "no"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.Target, r.Attempts, dump, conv, errText)
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Target, r.Attempts, dump, errText)
		}
	}
	tw.Flush()
	if hidden > 0 {
		fmt.Fprintf(w, "(%d more targets are fine and not listed; --verbose lists every target)\n", hidden)
	}
	fmt.Fprintln(w)
	if push {
		fmt.Fprintln(tw, "STATE\tAGENTS\tCONVERGED\tTARGETS")
	} else {
		fmt.Fprintln(tw, "STATE\tAGENTS\tTARGETS")
	}
	for _, g := range groupByState(results, push) {
		state := g.State
		if state == "" {
			state = "(no answer)"
		}
		names := g.Targets
		more := ""
		if len(names) > 3 {
			names, more = names[:3], fmt.Sprintf(" +%d", len(g.Targets)-3)
		}
		if push {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s%s\n", state, g.Agents, g.Converged, strings.Join(names, ","), more)
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%s%s\n", state, g.Agents, strings.Join(names, ","), more)
		}
	}
	tw.Flush()
}
