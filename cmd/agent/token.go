package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/token"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Ed25519 keys and proxy/admin tokens (docs/protocol.md §4.3)"}

	var out string
	var force bool
	keygen := &cobra.Command{
		Use:   "keygen --out DIR [--force]",
		Short: "Write DIR/edge.key (PKCS#8 PEM, mode 0600) and DIR/edge.pub (PKIX PEM); never over an existing key without --force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageErr("token keygen: --out DIR is required")
			}
			gen := token.GenerateKey
			if force {
				gen = token.ReplaceKey
			}
			k, p, err := gen(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\n", k, p)
			return nil
		},
	}
	keygen.Flags().StringVar(&out, "out", "", "directory for edge.key and edge.pub")
	keygen.Flags().BoolVar(&force, "force", false, "replace an existing key pair (tokens signed with the old key stop verifying)")

	var keyFile, hashes, sub, kid string
	var scopes []string
	var ttl time.Duration
	issue := &cobra.Command{
		Use:   "issue --key F --hash H[,H...] --sub S --ttl D [--kid K] [--scope registry:write] [--scope config:write]",
		Short: "Print a signed token, alone on stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" || hashes == "" || ttl <= 0 {
				return usageErr("token issue: --key, --hash and a positive --ttl are required")
			}
			scope, err := scopeClaim(scopes)
			if err != nil {
				return err
			}
			k, err := token.ReadPrivateKey(keyFile)
			if err != nil {
				return err
			}
			var hs []string
			for _, h := range strings.Split(hashes, ",") {
				v, err := config.ParseHash(strings.TrimSpace(h))
				if err != nil {
					return usageErr("token issue: --hash: %v", err)
				}
				hs = append(hs, v.String())
			}
			now := time.Now()
			c := token.Claims{Scope: scope, RegisteredClaims: jwt.RegisteredClaims{
				Subject: sub, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			}}
			if len(hs) == 1 {
				c.RegistryHash = hs[0]
			} else {
				c.RegistryHashes = hs
			}
			t, err := token.Issue(k, kid, c)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), t)
			return nil
		},
	}
	issue.Flags().StringVar(&keyFile, "key", "", "private key (PKCS#8 PEM)")
	issue.Flags().StringVar(&hashes, "hash", "", "registry hash(es), comma-separated")
	issue.Flags().StringVar(&sub, "sub", "", "who the token is for, e.g. @mycompany")
	issue.Flags().DurationVar(&ttl, "ttl", 0, "lifetime, e.g. 24h")
	issue.Flags().StringVar(&kid, "kid", "", "key id (the public key file's name without extension)")
	issue.Flags().StringArrayVar(&scopes, "scope", nil, "registry:write (requests other than reads: publish, dist-tags, ...) or config:write (admin); repeatable")

	var pubFile string
	verify := &cobra.Command{
		Use:   "verify --pub F TOKEN",
		Short: "Verify a token and print its claims; exit 1 with the reason when invalid",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := token.NewVerifier([]string{pubFile}, 0)
			if err != nil {
				return err
			}
			c, err := v.Verify(args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(c)
		},
	}
	verify.Flags().StringVar(&pubFile, "pub", "", "public key (PKIX PEM)")

	cmd.AddCommand(keygen, issue, verify)
	return cmd
}

// scopeClaim joins the --scope flags into the claim's space-separated list;
// an unknown scope is a usage error (a typo would issue a token that cannot
// do what was meant).
func scopeClaim(flags []string) (string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range flags {
		for _, s := range strings.FieldsFunc(f, func(r rune) bool { return r == ' ' || r == ',' }) {
			if s != token.ScopeRegistryWrite && s != token.ScopeConfigWrite {
				return "", usageErr("token issue: --scope %q: want %s or %s", s, token.ScopeRegistryWrite, token.ScopeConfigWrite)
			}
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return strings.Join(out, " "), nil
}
