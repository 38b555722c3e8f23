package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/configbus"
	"github.com/regedge/regedge/internal/token"
)

func newPushCmd(file *string) *cobra.Command {
	var to, stateDump, keyFile string
	var deadline, retry time.Duration
	cmd := &cobra.Command{
		Use:   "push --to HOST:PORT[,...] FIELD=VALUE...",
		Short: "Push one bulk update over the config bus to many agents, retried until they converge",
		Long: `Send one BULK update (docs/protocol.md §3.1) to every target's config bus and
retry each, with backoff, until the state it reports holds the pushed values
or --deadline passes. Prints a table: target, attempts, reported dump,
converged, and the last error. Exit status 1 when any target did not converge.

The targets must allow this host's address (bus.allow); by default an agent
allows only loopback. Agents with bus.publicKeys accept only signed datagrams:
--key FILE (the PKCS#8 PEM private key of one of those public keys, as written
by 'regedge token keygen') signs every attempt with a fresh timestamp. An agent
answers nothing to an unsigned or badly signed push, nor to a source off its
allow-list: such targets show "no answer".`,
		Example: `  regedge config push --to 10.0.0.2:4874,10.0.0.3:4874 terminalMode=2 rows=40 cols=120
  regedge config push --key /etc/regedge/bus.key --to 10.0.0.2:4874 rows=40`,
		Args: cobra.RangeArgs(1, codec.MaxBulkEntries),
		RunE: func(cmd *cobra.Command, args []string) error {
			targets := config.SplitList(to)
			if len(targets) == 0 {
				return usageErr("config push: --to needs at least one HOST:PORT")
			}
			entries, err := parseAssignments(args)
			if err != nil {
				return err
			}
			sender, err := localState(*file)
			if stateDump != "" {
				sender, err = codec.ParseDump(stateDump)
			}
			if err != nil {
				return err
			}
			var key ed25519.PrivateKey
			if keyFile != "" {
				if key, err = token.ReadPrivateKey(keyFile); err != nil {
					return usageErr("config push: --key: %v", strings.TrimPrefix(err.Error(), "token: "))
				}
			}
			results, err := configbus.Push(context.Background(), targets, configbus.PushOptions{
				Sender: sender, Entries: entries, Deadline: deadline, Retry: retry, Key: key,
			})
			if err != nil {
				return err
			}
			failed := 0
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TARGET\tATTEMPTS\tREPORTED\tCONVERGED\tERROR")
			for _, r := range results {
				dump := "-"
				if r.HasReport {
					dump = r.Reported.Dump()
				}
				conv := "yes"
				if !r.Converged {
					conv, failed = "no", failed+1
				}
				errText := r.Err
				if errText == "" {
					errText = "-"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.Target, r.Attempts, dump, conv, errText)
			}
			tw.Flush()
			silent := 0
			for _, r := range results {
				if !r.HasReport {
					silent++
				}
			}
			if silent > 0 && key == nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "note: agents with bus.publicKeys answer only signed pushes (--key FILE); no agent answers a source off its bus.allow")
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("config push: %d of %d targets did not converge", failed, len(results))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "comma-separated HOST:PORT bus addresses")
	cmd.Flags().StringVar(&stateDump, "state", "", "sender state dump carried in the datagrams (default: the local config's state)")
	cmd.Flags().DurationVar(&deadline, "deadline", 10*time.Second, "give up on a target after this long")
	cmd.Flags().StringVar(&keyFile, "key", "", "sign every datagram with this Ed25519 private key (PKCS#8 PEM)")
	cmd.Flags().DurationVar(&retry, "retry", 200*time.Millisecond, "first wait for an answer; doubled per attempt up to 2s")
	return cmd
}
