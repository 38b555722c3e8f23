package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/codec"
	"github.com/regedge/regedge/internal/config"
)

func newConfigCmd() *cobra.Command {
	var file string
	show := func(cmd *cobra.Command, from string) error {
		var s codec.State
		var err error
		if from != "" {
			s, err = fetchState(from)
		} else {
			s, err = localState(file)
		}
		if err != nil {
			return err
		}
		writeStateTable(cmd.OutOrStdout(), s)
		return nil
	}
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the config state as a table and its dump",
		Long: `Show the 13-byte config state as a table and its X-Bun-Config-Dump.

Without --from it is the state the agent would start with: the embedded
defaults, then --config FILE, then the BUN_CONFIG_* environment variables.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return show(cmd, "") },
	}
	cmd.PersistentFlags().StringVar(&file, "config", "", "config file (JSON)")
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

func localState(file string) (codec.State, error) {
	c, err := config.Load(file, nil)
	if err != nil {
		return codec.State{}, err
	}
	return c.State(), nil
}

// fetchState reads GET /api/config from an agent's admin listener.
func fetchState(admin string) (codec.State, error) {
	url := admin
	if !strings.Contains(url, "://") {
		url = "http://" + admin
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(strings.TrimSuffix(url, "/") + "/api/config")
	if err != nil {
		return codec.State{}, fmt.Errorf("config get: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return codec.State{}, fmt.Errorf("config get: %s answered %s", admin, resp.Status)
	}
	var body struct {
		Dump string `json:"dump"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body); err != nil {
		return codec.State{}, fmt.Errorf("config get: %s: %w", admin, err)
	}
	return codec.ParseDump(body.Dump)
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
