package main

import (
	"os"

	"github.com/spf13/cobra"
)

// adminTokenEnv is the default of --token on commands that write to an
// admin API.
const adminTokenEnv = "REGEDGE_ADMIN_TOKEN"

// addTokenFlag adds --token (an admin token, scope config:write) to a
// command that writes to an admin API.
func addTokenFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, "token", "", "admin token (scope config:write) for an agent whose admin listener is not on loopback (default $"+adminTokenEnv+")")
}

// adminTokenOf is --token, else the environment's.
func adminTokenOf(flag string) string {
	if flag != "" {
		return flag
	}
	return os.Getenv(adminTokenEnv)
}
