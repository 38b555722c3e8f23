package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
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
	cmd.Flags().StringVar(&f.registry, "registry", "", "registry or edge URL (default: registry= of DIR/.npmrc or ~/.npmrc, else the local agent's proxy listener)")
	cmd.Flags().StringVar(&f.token, "token", "", "token sent as Authorization: Bearer to the registry (default: $REGEDGE_TOKEN, else the .npmrc's _authToken)")
	cmd.Flags().StringVar(&f.file, "config", "", "config file (JSON) whose state is sent as the X-Bun-* headers")
	cmd.Flags().StringVarP(&f.dir, "dir", "C", ".", dirHelp)
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "print the headers of every request sent")
}

func newInstallCmd() *cobra.Command {
	var f clientFlags
	var noSave bool
	cmd := &cobra.Command{
		Use:   "install [PKG[@RANGE]...]",
		Short: "Install packages (or the project's dependencies) into node_modules through an edge",
		Long: `install resolves every PKG[@RANGE] (a semver range, a dist-tag, a version, or
an alias NAME@npm:PKG@RANGE) through the edge, and saves NAME: ^VERSION into
DIR/package.json as npm does (--no-save to leave it alone). Without PKG it
installs the dependencies and optionalDependencies of DIR/package.json
(optional ones that cannot be installed are skipped, with a warning).

The registry is --registry, else registry= of DIR/.npmrc or the user's
.npmrc ($npm_config_userconfig, else ~/.npmrc), else the local agent's
proxy listener; @scope:registry= lines route scoped packages (not with
--registry). The token is --token, else $REGEDGE_TOKEN, else the .npmrc's
//host[:port]/path/:_authToken= for the URL. Tokens and the config headers
go only to their registry (scheme, host, port and path), never to tarballs
elsewhere. Every tarball's integrity is checked; every package name from a
registry is checked against npm's rules before it becomes a path; the
packages are staged and moved into DIR/node_modules at the end, so a
failure leaves node_modules as it was.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			var specs []npmclient.Spec
			for _, a := range args {
				s := npmclient.ParseSpec(a)
				if why := npmclient.CheckName(s.Name); why != "" {
					return usageErr("install: %q: %q is not a valid npm package name: %s", a, s.Name, why)
				}
				specs = append(specs, s)
			}
			fromProject := len(args) == 0
			if fromProject {
				var err error
				if specs, err = npmclient.ProjectDeps(f.dir); err != nil {
					return fmt.Errorf("install: %w (node_modules unchanged)", err)
				}
				if len(specs) == 0 {
					fmt.Fprintf(out, "nothing to install: %s has no dependencies\n", filepath.Join(f.dir, "package.json"))
					return nil
				}
			}
			c, err := newNpmClient(cmd, f)
			if err != nil {
				return err
			}
			res, err := c.Install(cmd.Context(), f.dir, specs, out)
			if err != nil {
				return fmt.Errorf("install: %w (node_modules unchanged)", err)
			}
			fmt.Fprintf(out, "installed %d packages into %s\n", len(res.Packages), filepath.Join(f.dir, "node_modules"))
			if fromProject || noSave {
				return nil
			}
			var saved []npmclient.Saved
			for _, s := range specs {
				v := res.Direct[s.Name]
				if v == nil {
					continue
				}
				spec, err := npmclient.SavedSpec(s, v.Name, v.Version)
				if err != nil {
					return fmt.Errorf("install: %w (node_modules was installed, package.json not saved)", err)
				}
				saved = append(saved, npmclient.Saved{Name: s.Name, Spec: spec})
			}
			if err := npmclient.SaveDependencies(f.dir, saved); err != nil {
				return fmt.Errorf("install: saving package.json: %w (node_modules was installed)", err)
			}
			for _, s := range saved {
				fmt.Fprintf(out, "saved %s: %s in package.json\n", s.Name, s.Spec)
			}
			return nil
		},
	}
	f.add(cmd, "project directory")
	cmd.Flags().BoolVar(&noSave, "no-save", false, "do not record the packages in package.json")
	return cmd
}

// newNpmClient is the client install and publish share: the registry,
// scoped registries and tokens of npmclient.LoadSettings (flags,
// REGEDGE_TOKEN, DIR/.npmrc, the user's .npmrc; the local agent's proxy
// listener by default), the configured state as headers, a progress bar
// when stderr is a terminal.
func newNpmClient(cmd *cobra.Command, f clientFlags) (*npmclient.Client, error) {
	cfg, err := config.Load(f.file, nil)
	if err != nil {
		return nil, err
	}
	settings, err := npmclient.LoadSettings(npmclient.SettingsInput{
		Dir: f.dir, Registry: f.registry, Token: f.token,
		DefaultRegistry: "http://" + hostPort(cfg.Proxy.ListenHost, cfg.Proxy.ListenPort),
	})
	if err != nil {
		if errors.Is(err, npmclient.ErrNpmrc) {
			return nil, fmt.Errorf("%s: %w", cmd.Name(), err)
		}
		return nil, usageErr("%s: %v", cmd.Name(), err)
	}
	c := settings.Client()
	c.State, c.HTTP = cfg.State(), &http.Client{Timeout: 5 * time.Minute}
	errw := cmd.ErrOrStderr()
	if f.verbose {
		c.Verbose = errw
		fmt.Fprintf(errw, "registry %s (from %s)\n", settings.Registry, settings.RegistryFrom)
		for _, scope := range sortedKeys(settings.Scopes) {
			fmt.Fprintf(errw, "registry for %s: %s\n", scope, settings.Scopes[scope])
		}
		if settings.TokenFrom != "" {
			fmt.Fprintf(errw, "token for %s from %s\n", settings.Registry, settings.TokenFrom)
		}
		for _, key := range sortedKeys(settings.AuthTokens) {
			fmt.Fprintf(errw, "token for %s from %s\n", key, settings.AuthTokensFrom[key])
		}
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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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
the publish document to the package's registry with the token and the config
headers. The registry and token are found as for install: --registry, else
DIR/.npmrc or the user's .npmrc (registry=, @scope:registry= for a scoped
package, //host/path/:_authToken=), else the local agent's proxy listener;
--token, else $REGEDGE_TOKEN, else the .npmrc token. --dry-run lists the
files and stops.`,
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
			fmt.Fprintf(out, "published %s@%s to %s (tag %s)\n", p.Name, p.Version, c.RegistryFor(p.Name), tag)
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
