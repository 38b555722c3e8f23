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
	var to string
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
				return setField(cmd, file, to, args[0], args[1])
			}
			return show(cmd, "")
		},
	}
	cmd.PersistentFlags().StringVar(&file, "config", "", "config file (JSON)")
	cmd.Flags().StringVar(&to, "to", "", "admin address of the agent (default: admin.listen)")
	set := &cobra.Command{
		Use:   "set FIELD VALUE",
		Short: "Change one field of a running agent (admin API) and print the new dump",
		Args:  cobra.ExactArgs(2),
		RunE:  func(cmd *cobra.Command, args []string) error { return setField(cmd, file, to, args[0], args[1]) },
	}
	set.Flags().StringVar(&to, "to", "", "admin address of the agent (default: admin.listen)")
	cmd.AddCommand(set, newPushCmd(&file))
	var from string
	get := &cobra.Command{
		Use:   "get",
		Short: "Show the state of a running agent (--from ADMIN) or the local one",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return show(cmd, from) },
	}
	get.Flags().StringVar(&from, "from", "", "admin address of a running agent, e.g. 127.0.0.1:9873")
	cmd.AddCommand(get)
	return cmd
}

// setField changes one field of a running agent (PUT /api/config) and
// prints the new dump.
func setField(cmd *cobra.Command, file, to, field, value string) error {
	f, ok := codec.FieldByName(field)
	if !ok {
		return usageErr("unknown field %q", field)
	}
	c, err := adminClient(file, to, 5*time.Second)
	if err != nil {
		return err
	}
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
