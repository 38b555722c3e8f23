package main

import (
	"net/http"
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

// setAdminToken sends the token as Authorization: Bearer, from --token or
// the environment.
func setAdminToken(req *http.Request, tok string) {
	if tok == "" {
		tok = os.Getenv(adminTokenEnv)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
}

// tokenHint says what to do about a 401/403 from an admin API.
func tokenHint(resp *http.Response, tok string) string {
	switch {
	case resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden:
		return ""
	case tok == "" && os.Getenv(adminTokenEnv) == "":
		return " (off loopback the agent wants an admin token: --token T or " + adminTokenEnv + "; regedge token issue --scope config:write)"
	}
	return " (the token was refused: it needs scope config:write and a key in the agent's tokens.publicKeys)"
}
