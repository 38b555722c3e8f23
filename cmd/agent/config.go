package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/configbus"
)

func newConfigCmd() *cobra.Command {
	var file string
	show := func(cmd *cobra.Command, from string) error {
		var s codec.State
		var err error
		if from != "" {
			s, err = admin.NewClient(from, 5*time.Second).State(cmd.Context())
			if err != nil {
				err = fmt.Errorf("config get: %w", err)
			}
		} else {
			s, err = localState(file)
		}
		if err != nil {
			return err
		}
		writeStateTable(cmd.OutOrStdout(), s)
		return nil
	}
	var to, adminToken string
	cmd := &cobra.Command{
		Use:   "config [FIELD VALUE]",
		Short: "Show the config state, or set one field of a running agent",
		Long: `Show the 13-byte config state as a table and its X-Bun-Config-Dump: the
state the agent would start with (the embedded defaults, then --config FILE,
then the BUN_CONFIG_* environment variables).

With FIELD VALUE (the seed's form) it does what "config set" does.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 && len(args) != 2 {
				return usageErr("config takes no arguments, or FIELD VALUE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				return setField(cmd, file, to, adminToken, args[0], args[1])
			}
			return show(cmd, "")
		},
	}
	cmd.PersistentFlags().StringVar(&file, "config", "", "config file (JSON)")
	cmd.Flags().StringVar(&to, "to", "", "admin address of the agent (default: admin.listen)")
	addTokenFlag(cmd, &adminToken)
	set := &cobra.Command{
		Use:   "set FIELD VALUE [--to ADMIN] [--token T]",
		Short: "Change one field of a running agent (admin API) and print the new dump",
		Long: `Change one field of a running agent through its admin API (PUT /api/config)
and print the new dump. On a loopback admin address no token is needed;
elsewhere the agent wants an admin token (scope config:write): --token T, or
REGEDGE_ADMIN_TOKEN.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return setField(cmd, file, to, adminToken, args[0], args[1])
		},
	}
	set.Flags().StringVar(&to, "to", "", "admin address of the agent (default: admin.listen)")
	addTokenFlag(set, &adminToken)
	cmd.AddCommand(set, newPushCmd(&file))
	var from, bus, targetsFile, stateDump, keyFile string
	var deadline time.Duration
	var asJSON, verbose bool
	get := &cobra.Command{
		Use:   "get [--from ADMIN | --bus HOST:PORT[,...] | --targets-file F]",
		Short: "Show the state of a running agent (--from ADMIN), of many over the bus (--bus), or the local one",
		Long: `Show a config state: the local one (defaults, --config FILE, environment),
a running agent's (--from ADMIN, its admin API), or, read-only, the states of
many agents over the config bus (--bus HOST:PORT[,...] and/or --targets-file F,
one HOST:PORT a line): each target gets a HEARTBEAT, which changes nothing and
is answered with the agent's state. The bus form prints the targets that did
not answer (all of them when there are at most 20, or with --verbose) and the
targets grouped by state; --json for scripts. Agents with bus.publicKeys
answer only a signed heartbeat (--key FILE); none answers a source off its
bus.allow. Exit status 1 when a target did not answer.`,
		Example: `  regedge config get --from 127.0.0.1:9873
  regedge config get --bus 10.0.0.2:4874,10.0.0.3:4874
  regedge config get --targets-file nodes.txt --key /etc/regedge/bus.key --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if bus == "" && targetsFile == "" {
				return show(cmd, from)
			}
			if from != "" {
				return usageErr("config get: --from and --bus/--targets-file: one or the other")
			}
			return queryBus(cmd, file, bus, targetsFile, stateDump, keyFile, deadline, asJSON, verbose)
		},
	}
	get.Flags().StringVar(&from, "from", "", "admin address of a running agent, e.g. 127.0.0.1:9873")
	get.Flags().StringVar(&bus, "bus", "", "comma-separated HOST:PORT bus addresses to ask (read-only)")
	get.Flags().StringVar(&targetsFile, "targets-file", "", "file of HOST:PORT bus addresses, one a line (# comments)")
	get.Flags().StringVar(&stateDump, "state", "", "sender state carried in the heartbeats (default: the local config's state)")
	get.Flags().StringVar(&keyFile, "key", "", "sign every heartbeat with this Ed25519 private key (PKCS#8 PEM)")
	get.Flags().DurationVar(&deadline, "deadline", 3*time.Second, "give up on a target after this long")
	get.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	get.Flags().BoolVar(&verbose, "verbose", false, "list every target, even past 20")
	cmd.AddCommand(get, newValidateCmd())
	return cmd
}

// newValidateCmd is `regedge config validate FILE`: the strict check (an
// unknown key is an error here; `run` only warns), for CI and before a
// rollout.
func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a config file strictly: unknown keys are errors here (at run they are warnings)",
		Long: `Check FILE as 'regedge run --config FILE' reads it (the embedded defaults,
the file, then the environment), strictly: a key this build does not know is
an error, as is any bad value. Prints "FILE: valid" and exits 0, or names the
first problem and exits 1; for unknown keys it also lists every key run would
ignore.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if _, err := config.Load(file, nil); err != nil {
				if _, unknown, lerr := config.LoadLenient(file, nil); lerr == nil && len(unknown) > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "keys this build does not know (regedge run would ignore them): %s\n", strings.Join(unknown, ", "))
				}
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid\n", file)
			return nil
		},
	}
}

// queryBus is config get --bus: a HEARTBEAT to each target, the states
// they report.
func queryBus(cmd *cobra.Command, file, bus, targetsFile, stateDump, keyFile string, deadline time.Duration, asJSON, verbose bool) error {
	targets, err := readTargets(bus, targetsFile)
	if err != nil {
		return err
	}
	if len(targets) == 0 {
		return usageErr("config get: --bus or --targets-file needs at least one HOST:PORT")
	}
	sender, err := busSenderState(file, stateDump)
	if err != nil {
		return err
	}
	key, err := readBusKey("config get", keyFile)
	if err != nil {
		return err
	}
	results, err := configbus.Query(cmd.Context(), targets, configbus.QueryOptions{Sender: sender, Deadline: deadline, Key: key})
	if err != nil {
		return err
	}
	silent := 0
	for _, r := range results {
		if !r.HasReport {
			silent++
		}
	}
	if asJSON {
		if err := writeFleetJSON(cmd.OutOrStdout(), fleetReport{Command: "get", Total: len(results), Answered: len(results) - silent,
			Groups: groupByState(results, false), Results: toTargetResults(results, false)}); err != nil {
			return err
		}
	} else {
		writeFleetTable(cmd.OutOrStdout(), results, false, verbose)
	}
	if silent > 0 {
		if key == nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "note: agents with bus.publicKeys answer only signed heartbeats (--key FILE); no agent answers a source off its bus.allow")
		}
		return &exitError{code: 1, err: fmt.Errorf("config get: %d of %d targets did not answer", silent, len(results))}
	}
	return nil
}

// setField changes one field of a running agent (PUT /api/config) and
// prints the new dump.
func setField(cmd *cobra.Command, file, to, adminToken, field, value string) error {
	f, ok := codec.FieldByName(field)
	if !ok {
		return usageErr("unknown field %q", field)
	}
	c, err := adminClient(file, to, 5*time.Second)
	if err != nil {
		return err
	}
	c.SetToken(adminTokenOf(adminToken))
	dump, err := c.SetField(cmd.Context(), f.Name, value)
	if err != nil {
		return fmt.Errorf("config set: %w", err)
	}
	fmt.Fprintln(cmd.OutOrStdout(), dump)
	return nil
}

// adminClient is the client of the agent at admin address to, or, when to
// is empty, at admin.listen of the config (file, environment, defaults).
func adminClient(file, to string, timeout time.Duration) (*admin.Client, error) {
	if to == "" {
		c, err := config.Load(file, nil)
		if err != nil {
			return nil, err
		}
		to = c.Admin.Listen
	}
	return admin.NewClient(to, timeout), nil
}

func localState(file string) (codec.State, error) {
	c, err := config.Load(file, nil)
	if err != nil {
		return codec.State{}, err
	}
	return c.State(), nil
}

// writeStateTable prints every field with its id, value and meaning, then the dump.
func writeStateTable(w io.Writer, s codec.State) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIELD\tID\tVALUE\tMEANING")
	for _, f := range codec.Fields() {
		v := s.Get(f.ID)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", f.Name, f.ID, formatValue(f.ID, v), meaning(f.ID, v))
	}
	tw.Flush()
	fmt.Fprintf(w, "dump: %s\n", s.Dump())
}

func formatValue(id codec.FieldID, v uint64) string {
	if id == codec.FieldRegistryHash || id == codec.FieldFeatureFlags {
		return fmt.Sprintf("0x%08x", v)
	}
	return fmt.Sprint(v)
}

func meaning(id codec.FieldID, v uint64) string {
	switch id {
	case codec.FieldRegistryHash:
		if v == 0 {
			return "default/public registry"
		}
	case codec.FieldFeatureFlags:
		return strings.Join(codec.FlagNames(uint32(v)), "|")
	case codec.FieldTerminalMode:
		if v <= 0xff {
			if n := codec.TerminalModeName(uint8(v)); n != "" {
				return n
			}
		}
		return "invalid"
	}
	return ""
}
