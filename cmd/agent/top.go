package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/regedge/regedge/internal/admin"
	"github.com/regedge/regedge/internal/top"
)

func newTopCmd() *cobra.Command {
	var from, file string
	var once bool
	cmd := &cobra.Command{
		Use:   "top [--from ADMIN] [--once]",
		Short: "Live view of a running agent: traffic per registry, drops, tokens, cache",
		Long: `A live view of a running agent, refreshed every second from its admin
listener: per registry hash packets, bytes and requests per second, kernel
drops by reason, token results, cache hit rate, BPF mode, WebSocket clients.
With --once, or when the output is not a terminal, it prints one plain table
(rates over one second) and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out, isFile := cmd.OutOrStdout().(*os.File)
			if once || !isFile || !term.IsTerminal(int(out.Fd())) {
				c, err := adminClient(file, from, 5*time.Second)
				if err != nil {
					return err
				}
				return topOnce(cmd, c)
			}
			c, err := adminClient(file, from, 2*time.Second) // a fetch every second
			if err != nil {
				return err
			}
			p := tea.NewProgram(top.New(c), tea.WithInput(cmd.InOrStdin()), tea.WithOutput(out))
			_, err = p.Run()
			return err
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "admin address of the agent (default: admin.listen)")
	cmd.Flags().StringVar(&file, "config", "", "config file (JSON)")
	cmd.Flags().BoolVar(&once, "once", false, "print one plain table and exit")
	return cmd
}

func topOnce(cmd *cobra.Command, c *admin.Client) error {
	ctx := cmd.Context()
	prev, err := top.Fetch(ctx, c)
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // rates over one second: the only wait, and bounded
	cur, err := top.Fetch(ctx, c)
	if err != nil {
		return err
	}
	view := top.Render(prev, cur, 120, 1000)
	view = strings.TrimSuffix(view, "\n\nq to quit")
	fmt.Fprintln(cmd.OutOrStdout(), view)
	return nil
}
