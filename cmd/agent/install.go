package main

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/npmclient"
)

// clientFlags are the flags install and publish share.
type clientFlags struct {
	registry, token, file, dir string
	verbose                    bool
}

func (f *clientFlags) add(cmd *cobra.Command, dirHelp string) {
	cmd.Flags().StringVar(&f.registry, "registry", "", "registry or edge URL (default: the local agent's proxy listener)")
	cmd.Flags().StringVar(&f.token, "token", "", "proxy token sent as Authorization: Bearer (default: $REGEDGE_TOKEN)")
	cmd.Flags().StringVar(&f.file, "config", "", "config file (JSON) whose state is sent as the X-Bun-* headers")
	cmd.Flags().StringVarP(&f.dir, "dir", "C", ".", dirHelp)
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "print the headers of every request sent")
}

func newInstallCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "install PKG[@RANGE]...",
		Short: "Install packages and their production dependencies into node_modules through an edge",
		Long: `install resolves every PKG[@RANGE] (a semver range, a dist-tag or a version)
through the edge (by default the local agent's proxy listener; any registry
with --registry), sending the config headers of the configured state and the
token (--token or REGEDGE_TOKEN). Every tarball's integrity is checked; the
packages and their production dependencies are staged and moved into
DIR/node_modules at the end, so a failure leaves node_modules as it was.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newNpmClient(cmd, f)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			specs := make([]npmclient.Spec, len(args))
			for i, a := range args {
				specs[i] = npmclient.ParseSpec(a)
				if specs[i].Name == "" {
					return usageErr("install: %q: want PKG or PKG@RANGE", a)
				}
			}
			done, err := c.Install(cmd.Context(), f.dir, specs, out)
			if err != nil {
				return fmt.Errorf("install: %w (node_modules unchanged)", err)
			}
			fmt.Fprintf(out, "installed %d packages into %s\n", len(done), filepath.Join(f.dir, "node_modules"))
			return nil
		},
	}
	f.add(cmd, "project directory")
	return cmd
}

// newNpmClient is the client install and publish share: the registry
// (default: the local agent's proxy listener), the token (flag, then
// $REGEDGE_TOKEN), the configured state as headers, a progress bar when
// stderr is a terminal.
func newNpmClient(cmd *cobra.Command, f clientFlags) (*npmclient.Client, error) {
	registry, token := f.registry, f.token
	cfg, err := config.Load(f.file, nil)
	if err != nil {
		return nil, err
	}
	if registry == "" {
		registry = "http://" + hostPort(cfg.Proxy.ListenHost, cfg.Proxy.ListenPort)
	}
	u, err := url.Parse(registry)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageErr("%s: --registry %q: want an http(s) URL", cmd.Name(), registry)
	}
	if token == "" {
		token = os.Getenv("REGEDGE_TOKEN")
	}
	c := &npmclient.Client{Registry: u, Token: token, State: cfg.State(), HTTP: &http.Client{Timeout: 5 * time.Minute}}
	errw := cmd.ErrOrStderr()
	if f.verbose {
		c.Verbose = errw
	}
	if tty, ok := errw.(*os.File); ok && term.IsTerminal(int(tty.Fd())) {
		c.Progress = func(label string, total int64) func(int64) {
			bar := progressbar.NewOptions64(total, progressbar.OptionSetWriter(tty),
				progressbar.OptionSetDescription(label), progressbar.OptionShowBytes(true),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(tty) }))
			return func(n int64) { _ = bar.Add64(n) } // a progress bar that cannot draw is no reason to stop
		}
	}
	return c, nil
}

func newPublishCmd() *cobra.Command {
	var f clientFlags
	var tag string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "publish",
		Short: "Pack a package directory as npm does and publish it through the edge",
		Long: `publish packs DIR (default: the current directory) as npm pack does (package.json
"files", the root .npmignore or .gitignore, the always-included and
never-included files), computes its sha512 integrity and sha1 shasum, and PUTs
the publish document through the edge (or --registry) with the token and the
config headers. --dry-run lists the files and stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newNpmClient(cmd, f)
			if err != nil {
				return err
			}
			p, err := npmclient.Pack(f.dir)
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			out := cmd.OutOrStdout()
			for _, f := range p.Files {
				fmt.Fprintf(out, "packed %s\n", f)
			}
			fmt.Fprintf(out, "%s@%s: %d files, %d bytes, %s\n", p.Name, p.Version, len(p.Files), len(p.Tarball), p.Integrity)
			if dryRun {
				return nil
			}
			if err := c.Publish(cmd.Context(), p, tag); err != nil {
				return err
			}
			fmt.Fprintf(out, "published %s@%s to %s (tag %s)\n", p.Name, p.Version, c.Registry, tag)
			return nil
		},
	}
	f.add(cmd, "package directory")
	cmd.Flags().StringVar(&tag, "tag", "latest", "dist-tag to point at the new version")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "pack and list the files, publish nothing")
	return cmd
}

// hostPort makes a dialable address of a listen host and port; a wildcard
// host becomes loopback.
func hostPort(host string, port int) string {
	switch host {
	case "", "0.0.0.0", "::", "[::]":
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
