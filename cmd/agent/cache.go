package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/regedge/regedge/internal/config"

	"github.com/spf13/cobra"
)

func newCacheCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "The edge cache of a running agent"}
	var to, file, adminToken string
	var toFleet bool
	purge := &cobra.Command{
		Use:   "purge PKG[@VERSION] [--fleet] [--to ADMIN] [--token T]",
		Short: "Drop the cached packuments and tarballs of a package (or one version); --fleet: and tell every peer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pkg, version := splitPackageVersion(args[0])
			if pkg == "" {
				return usageErr("cache purge: %q: want PKG or PKG@VERSION", args[0])
			}
			var fleetErr error
			if toFleet {
				// First, and whatever the local agent says: the fleet is
				// told even when this host's cache is off or down.
				cfg, err := config.Load(file, nil)
				if err != nil {
					return err
				}
				fleetErr = sendFleetHint(cmd.OutOrStdout(), cfg, pkg)
			}
			c, err := adminClient(file, to, 10*time.Second)
			if err != nil {
				return err
			}
			c.SetToken(adminTokenOf(adminToken))
			n, err := c.PurgeCache(cmd.Context(), pkg, version)
			if err != nil {
				return fmt.Errorf("cache purge: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %d entries of %s\n", n, args[0])
			return fleetErr
		},
	}
	purge.Flags().StringVar(&to, "to", "", "admin address of the agent (default: admin.listen)")
	purge.Flags().StringVar(&file, "config", "", "config file (JSON)")
	addTokenFlag(purge, &adminToken)
	purge.Flags().BoolVar(&toFleet, "fleet", false, "also send the package's revalidation hint to every peer of fleet.peers (this host left out)")
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
