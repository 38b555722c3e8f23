package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/configbus"
	"github.com/regedge/regedge/internal/token"
)

func newPushCmd(file *string) *cobra.Command {
	var to, targetsFile, stateDump, keyFile string
	var deadline, retry time.Duration
	var asJSON, verbose bool
	cmd := &cobra.Command{
		Use:   "push --to HOST:PORT[,...] | --targets-file F  FIELD=VALUE...",
		Short: "Push one bulk update over the config bus to many agents, retried until they converge",
		Long: `Send one BULK update (docs/protocol.md §3.1) to every target's config bus and
retry each, with backoff, until the state it reports holds the pushed values
or --deadline passes. Targets come from --to (comma-separated) and
--targets-file (one HOST:PORT a line, # comments). Prints the targets (every
one when there are at most 20 or with --verbose, else those that did not
converge), then the targets grouped by the state they reported. --json prints
the same as one JSON document. Exit status 1 when any target did not converge.

The targets must allow this host's address (bus.allow); by default an agent
allows only loopback. Agents with bus.publicKeys accept only signed datagrams:
--key FILE (the PKCS#8 PEM private key of one of those public keys, as written
by 'regedge token keygen') signs every attempt with a fresh timestamp. An agent
answers nothing to an unsigned or badly signed push, nor to a source off its
allow-list: such targets show "no answer".`,
		Example: `  regedge config push --to 10.0.0.2:4874,10.0.0.3:4874 terminalMode=2 rows=40 cols=120
  regedge config push --key /etc/regedge/bus.key --targets-file nodes.txt --json rows=40`,
		Args: cobra.RangeArgs(1, codec.MaxBulkEntries),
		RunE: func(cmd *cobra.Command, args []string) error {
			targets, err := readTargets(to, targetsFile)
			if err != nil {
				return err
			}
			if len(targets) == 0 {
				return usageErr("config push: --to or --targets-file needs at least one HOST:PORT")
			}
			entries, err := parseAssignments(args)
			if err != nil {
				return err
			}
			sender, err := busSenderState(*file, stateDump)
			if err != nil {
				return err
			}
			key, err := readBusKey("config push", keyFile)
			if err != nil {
				return err
			}
			results, err := configbus.Push(context.Background(), targets, configbus.PushOptions{
				Sender: sender, Entries: entries, Deadline: deadline, Retry: retry, Key: key,
			})
			if err != nil {
				return err
			}
			failed, silent := 0, 0
			for _, r := range results {
				if !r.Converged {
					failed++
				}
				if !r.HasReport {
					silent++
				}
			}
			if asJSON {
				conv := len(results) - failed
				if err := writeFleetJSON(cmd.OutOrStdout(), fleetReport{Command: "push", Pushed: args, Total: len(results),
					Converged: &conv, Answered: len(results) - silent, Groups: groupByState(results, true),
					Results: toTargetResults(results, true)}); err != nil {
					return err
				}
			} else {
				writeFleetTable(cmd.OutOrStdout(), results, true, verbose)
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
	cmd.Flags().StringVar(&targetsFile, "targets-file", "", "file of HOST:PORT bus addresses, one a line (# comments)")
	cmd.Flags().StringVar(&stateDump, "state", "", "sender state dump carried in the datagrams (default: the local config's state)")
	cmd.Flags().DurationVar(&deadline, "deadline", 10*time.Second, "give up on a target after this long")
	cmd.Flags().StringVar(&keyFile, "key", "", "sign every datagram with this Ed25519 private key (PKCS#8 PEM)")
	cmd.Flags().DurationVar(&retry, "retry", 200*time.Millisecond, "first wait for an answer; doubled per attempt up to 2s")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "list every target, even past 20")
	return cmd
}

// busSenderState is the state a datagram carries: --state, else the local
// config's.
func busSenderState(file, dump string) (codec.State, error) {
	if dump != "" {
		return codec.ParseDump(dump)
	}
	return localState(file)
}

// readBusKey reads --key (a PKCS#8 PEM Ed25519 private key), nil without.
func readBusKey(what, keyFile string) (ed25519.PrivateKey, error) {
	if keyFile == "" {
		return nil, nil
	}
	key, err := token.ReadPrivateKey(keyFile)
	if err != nil {
		return nil, usageErr("%s: --key: %v", what, strings.TrimPrefix(err.Error(), "token: "))
	}
	return key, nil
}
