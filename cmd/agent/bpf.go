package main

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/loader"
)

func newBPFCmd() *cobra.Command {
	var file string
	var bpffs string
	cmd := &cobra.Command{
		Use:   "bpf",
		Short: "Inspect or remove the kernel datapath (pins under bpffs)",
	}
	cmd.PersistentFlags().StringVar(&file, "config", "", "config file (JSON): agent.bpffs and agent.interfaces")
	cmd.PersistentFlags().StringVar(&bpffs, "bpffs", "", "bpffs mount point (default: agent.bpffs, /sys/fs/bpf)")
	resolve := func() (*config.Config, string, error) {
		c, err := config.Load(file, nil)
		if err != nil {
			return nil, "", err
		}
		if bpffs != "" {
			return c, bpffs, nil
		}
		return c, c.Agent.BPFFS, nil
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Attached programs, links, pinned maps and kernel counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, fs, err := resolve()
			if err != nil {
				return err
			}
			st, err := loader.ReadStatus(fs)
			if err != nil {
				return err
			}
			writeStatus(cmd, st)
			return nil
		},
	}
	var ifaces []string
	detach := &cobra.Command{
		Use:   "detach [--interface IF]...",
		Short: "Remove all of regedge's kernel state: links, programs, maps",
		Long: `Remove every pinned link (detaching its program) and every pinned map
under bpffs, and any clsact fallback attachment (kernels without TCX) on the
configured interfaces. Packets are no longer judged in the kernel afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, fs, err := resolve()
			if err != nil {
				return err
			}
			if len(ifaces) == 0 {
				ifaces = c.Agent.Interfaces
			}
			if err := loader.Detach(fs, ifaces); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached: removed every pin under %s\n", loader.PinRoot(fs))
			return nil
		},
	}
	detach.Flags().StringArrayVar(&ifaces, "interface", nil, "interface to clear of fallback attachments (default: agent.interfaces)")
	cmd.AddCommand(status, detach, newBlocklistCmd(resolve))
	return cmd
}

// newBlocklistCmd is `regedge bpf blocklist list|unblock ADDR`: the
// token-failure block list, read and changed in the pins (an agent need
// not run: the list outlives the agent that filled it).
func newBlocklistCmd(resolve func() (*config.Config, string, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blocklist",
		Short: "The token-failure block list (sources XDP cuts off from the proxy ports)",
	}
	open := func() (*loader.PinnedBlockList, error) {
		_, fs, err := resolve()
		if err != nil {
			return nil, err
		}
		return loader.OpenPinnedBlockList(fs)
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Sources on the block list and when each entry expires",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bl, err := open()
			if err != nil {
				return err
			}
			defer func() { _ = bl.Close() }() // maps only read, or one entry deleted: nothing left to lose
			entries, err := bl.List()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(entries) == 0 {
				fmt.Fprintln(w, "the block list is empty")
				return nil
			}
			sort.Slice(entries, func(i, j int) bool { return entries[i].Prefix.String() < entries[j].Prefix.String() })
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SOURCE\tEXPIRES\tIN")
			for _, e := range entries {
				at, in := "never", "-"
				if !e.Expires.IsZero() {
					at, in = e.Expires.UTC().Format(time.RFC3339), time.Until(e.Expires).Round(time.Second).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Prefix, at, in)
			}
			return tw.Flush()
		},
	}
	unblock := &cobra.Command{
		Use:   "unblock ADDR",
		Short: "Remove a source (an address, or the prefix list shows) from the block list",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix, err := parseSource(args[0])
			if err != nil {
				return usageErr("bpf blocklist unblock: %v", err)
			}
			bl, err := open()
			if err != nil {
				return err
			}
			defer func() { _ = bl.Close() }() // maps only read, or one entry deleted: nothing left to lose
			if err := bl.Unblock(prefix); err != nil {
				if errors.Is(err, loader.ErrNotBlocked) {
					return &exitError{code: 1, err: fmt.Errorf("bpf blocklist unblock: %w", err)}
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "unblocked %s\n", prefix)
			return nil
		},
	}
	cmd.AddCommand(list, unblock)
	return cmd
}

// parseSource reads an address (a host prefix) or a CIDR prefix.
func parseSource(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want an IP address or a CIDR prefix", s)
	}
	return p.Masked(), nil
}

func writeStatus(cmd *cobra.Command, st *loader.Status) {
	w := cmd.OutOrStdout()
	if len(st.Links) == 0 && len(st.Maps) == 0 {
		fmt.Fprintf(w, "no regedge kernel state under %s\n", st.Dir)
		return
	}
	fmt.Fprintf(w, "pins: %s\n\n", st.Dir)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LINK\tTYPE\tPROGRAM\tPROG ID\tSTATE")
	var defunct int
	for _, l := range st.Links {
		state := "live"
		switch {
		case l.Defunct != "":
			state = "defunct: " + l.Defunct
			defunct++
		case l.Type == "":
			state = "unreadable" // not a link bpf status can open
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", l.Name, l.Type, l.Program, l.ProgramID, state)
	}
	tw.Flush()
	if defunct > 0 {
		fmt.Fprintf(w, "%d defunct link pin(s): they judge no packet; the next agent start removes them (or regedge bpf detach)\n", defunct)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "MAP\tTYPE\tKEY\tVALUE\tMAX ENTRIES\tMEMORY")
	for _, m := range st.Maps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", m.Name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, bytesText(m.Memlock))
	}
	fmt.Fprintf(tw, "total\t\t\t\t\t%s\n", bytesText(st.MapMemory()))
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "HOOK\tREASON\tPACKETS")
	for r := loader.Reason(0); r < loader.NumReasons; r++ {
		word := r.String()
		if r == loader.ReasonOK {
			word = "pass"
		}
		if st.XDP[r] != 0 || r == loader.ReasonOK {
			fmt.Fprintf(tw, "xdp\t%s\t%d\n", word, st.XDP[r])
		}
	}
	fmt.Fprintf(tw, "tc\tpass\t%d\n", st.TC[loader.ReasonOK])
	tw.Flush()
	if len(st.Registries) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "REGISTRY HASH\tDIRECTION\tPACKETS\tBYTES")
		for _, r := range st.Registries {
			dir := "ingress"
			if r.Egress {
				dir = "egress"
			}
			fmt.Fprintf(tw, "0x%08x\t%s\t%d\t%d\n", r.Hash, dir, r.Packets, r.Bytes)
		}
		tw.Flush()
	}
	if st.Local != nil {
		// The addresses a drop is known to be the node's by; others ask
		// the routing table (docs/kernel.md).
		fmt.Fprintln(w)
		what := "the node's addresses, kept by the agent"
		if st.Local.Incomplete {
			what += "; more than fit: the routing table decides for the rest"
		}
		addrs := make([]string, len(st.Local.Addrs))
		for i, a := range st.Local.Addrs {
			addrs[i] = a.String()
		}
		if len(addrs) == 0 {
			addrs = []string{"none (every drop asks the routing table)"}
		}
		fmt.Fprintf(w, "LOCAL ADDRESSES (%s): %s\n", what, strings.Join(addrs, " "))
	}
}

func bytesText(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
