package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/loader"
)

// newSysdumpCmd is `regedge sysdump`: one file with what a support request
// needs, collected from the agent's admin listener and the pins.
func newSysdumpCmd() *cobra.Command {
	var from, out, file, bpffs, adminToken string
	cmd := &cobra.Command{
		Use:   "sysdump [--out FILE] [--from ADMIN] [--token T]",
		Short: "Write a support bundle: effective config (secrets redacted), health, metrics, bpf status, recent logs",
		Long: `Collect, into one .tar.gz, what a support request needs from this node:

  version.txt       this CLI's build and the agent's (regedge_build_info)
  health.json       /health (every subsystem), readyz.json (/readyz)
  state.json        /api/config, the running config state
  config.json       the effective configuration, secrets redacted
  metrics.txt       /metrics
  logs.jsonl        the agent's last log lines (256 KiB, not access lines)
  bpf-status.txt    pins, links, maps, kernel counters (root)
  blocklist.txt     the token-failure block list (root)
  errors.txt        what could not be collected, and why

The agent is asked on --from (default admin.listen); off loopback,
config.json and logs.jsonl need an admin token (--token or
REGEDGE_ADMIN_TOKEN). A part that cannot be collected (the agent is down, no
root for the pins) is named in errors.txt and the rest is still written.
--out defaults to regedge-sysdump-HOST-TIME.tar.gz in the current directory;
"-" writes to stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := config.LoadLenient(file, nil) // a newer config still names the admin address
			if err != nil {
				return err
			}
			if from == "" {
				from = c.Admin.Listen
			}
			if bpffs == "" {
				bpffs = c.Agent.BPFFS
			}
			parts, problems := collectSysdump(from, bpffs, adminToken)
			if out == "" {
				host, _ := os.Hostname()
				out = fmt.Sprintf("regedge-sysdump-%s-%s.tar.gz", host, time.Now().UTC().Format("20060102T150405Z"))
			}
			var w io.Writer = cmd.OutOrStdout()
			if out != "-" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			if err := writeBundle(w, parts, problems); err != nil {
				return fmt.Errorf("sysdump: %w", err)
			}
			if out != "-" {
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d parts", out, len(parts))
				if len(problems) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "; %d could not be collected: see errors.txt", len(problems))
				}
				fmt.Fprintln(cmd.OutOrStdout(), ")")
			}
			for _, p := range problems {
				fmt.Fprintln(cmd.ErrOrStderr(), "sysdump:", p)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "admin address of the agent (default: admin.listen)")
	cmd.Flags().StringVar(&out, "out", "", `bundle to write ("-" for stdout)`)
	cmd.Flags().StringVar(&file, "config", "", "config file (JSON): admin.listen, agent.bpffs")
	cmd.Flags().StringVar(&bpffs, "bpffs", "", "bpffs mount point (default: agent.bpffs)")
	addTokenFlag(cmd, &adminToken)
	return cmd
}

// collectSysdump gathers the bundle's parts by name; problems say what
// could not be had.
func collectSysdump(adminAddr, bpffs, adminToken string) (map[string][]byte, []string) {
	parts := map[string][]byte{}
	var problems []string
	client := admin.NewClient(adminAddr, 10*time.Second)
	client.SetToken(adminTokenOf(adminToken))
	fetch := func(name, path string, anyStatus bool) {
		var ok []int
		if !anyStatus {
			ok = []int{http.StatusOK}
		}
		b, _, err := client.Get(context.Background(), path, ok...)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			return
		}
		parts[name] = b
	}
	fetch("health.json", "/health", false)
	fetch("readyz.json", "/readyz", true)
	fetch("state.json", "/api/config", false)
	fetch("config.json", "/api/debug/config", false)
	fetch("metrics.txt", "/metrics", false)
	fetch("logs.jsonl", "/api/debug/logs", false)

	var v bytes.Buffer
	fmt.Fprintf(&v, "regedge CLI %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, l := range strings.Split(string(parts["metrics.txt"]), "\n") {
		if strings.HasPrefix(l, "regedge_build_info{") {
			fmt.Fprintf(&v, "agent: %s\n", l)
		}
	}
	parts["version.txt"] = v.Bytes()

	if st, err := loader.ReadStatus(bpffs); err != nil {
		problems = append(problems, fmt.Sprintf("bpf-status.txt: %v", err))
	} else {
		var b bytes.Buffer
		c := &cobra.Command{}
		c.SetOut(&b)
		writeStatus(c, st)
		parts["bpf-status.txt"] = b.Bytes()
	}
	if bl, err := loader.OpenPinnedBlockList(bpffs); err != nil {
		problems = append(problems, fmt.Sprintf("blocklist.txt: %v", err))
	} else {
		entries, err := bl.List()
		_ = bl.Close() // read only
		if err != nil {
			problems = append(problems, fmt.Sprintf("blocklist.txt: %v", err))
		} else {
			var b bytes.Buffer
			for _, e := range entries {
				exp := "never"
				if !e.Expires.IsZero() {
					exp = e.Expires.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(&b, "%s\t%s\n", e.Prefix, exp)
			}
			parts["blocklist.txt"] = b.Bytes()
		}
	}
	return parts, problems
}

// writeBundle writes the parts (and errors.txt) as a gzipped tar, sorted
// by name.
func writeBundle(w io.Writer, parts map[string][]byte, problems []string) error {
	if len(problems) > 0 {
		parts["errors.txt"] = []byte(strings.Join(problems, "\n") + "\n")
	}
	names := make([]string, 0, len(parts))
	for n := range parts {
		names = append(names, n)
	}
	sort.Strings(names)
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	now := time.Now()
	for _, n := range names {
		hdr := &tar.Header{Name: "regedge-sysdump/" + n, Mode: 0o600, Size: int64(len(parts[n])), ModTime: now, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(parts[n]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
