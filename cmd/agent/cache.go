package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/config"
)

func newCacheCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "The edge cache of a running agent"}
	var to, file, adminToken string
	purge := &cobra.Command{
		Use:   "purge PKG[@VERSION] [--to ADMIN] [--token T]",
		Short: "Drop the cached packuments and tarballs of a package (or one version)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pkg, version := splitPackageVersion(args[0])
			if pkg == "" {
				return usageErr("cache purge: %q: want PKG or PKG@VERSION", args[0])
			}
			if to == "" {
				c, err := config.Load(file, nil)
				if err != nil {
					return err
				}
				to = c.Admin.Listen
			}
			u := adminURL(to) + "/api/cache/" + pkg
			if version != "" {
				u += "?version=" + url.QueryEscape(version)
			}
			req, _ := http.NewRequest(http.MethodDelete, u, nil)
			setAdminToken(req, adminToken)
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				return fmt.Errorf("cache purge: %w", err)
			}
			defer resp.Body.Close()
			var out struct {
				Purged int    `json:"purged"`
				Error  string `json:"error"`
			}
			json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&out)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("cache purge: %s answered %s: %s%s", to, resp.Status, out.Error, tokenHint(resp, adminToken))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %d entries of %s\n", out.Purged, args[0])
			return nil
		},
	}
	purge.Flags().StringVar(&to, "to", "", "admin address of the agent (default: admin.listen)")
	purge.Flags().StringVar(&file, "config", "", "config file (JSON)")
	addTokenFlag(purge, &adminToken)
	cmd.AddCommand(purge)
	return cmd
}

// splitPackageVersion splits "@scope/name@1.2.3" and "name@1.2.3".
func splitPackageVersion(s string) (string, string) {
	at := strings.LastIndex(s, "@")
	if at <= 0 { // no version, or only a scope's @
		return s, ""
	}
	return s[:at], s[at+1:]
}
