package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/regedge/regedge/internal/agent"
	"github.com/regedge/regedge/internal/config"
	"github.com/regedge/regedge/internal/logging"
)

// logBuffer is the log sink's bound (logging.DefaultBuffer); tests make it
// small to see lines dropped.
var logBuffer = logging.DefaultBuffer

func newRunCmd() *cobra.Command {
	var file string
	var ifaces []string
	cmd := &cobra.Command{
		Use:   "run [--config FILE] [--interface IF]...",
		Short: "Run the agent with the embedded defaults, a config file and the environment",
		Long: `Run the agent. Configuration is the embedded defaults, then --config FILE
(JSON), then environment variables, then flags. Keys of the file this build
does not know are ignored with a warning (regedge_config_unknown_keys), so an
older agent starts on a newer config; every other mistake stops the start.
'regedge config validate FILE' checks a file strictly.
Logs are JSON on stderr. SIGHUP re-reads the file and applies its config
state; SIGINT or SIGTERM stops the agent gracefully (the kernel programs stay
attached through their pins).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, unknown, err := config.LoadLenient(file, nil)
			if err != nil {
				return err
			}
			if len(ifaces) > 0 {
				cfg.Agent.Interfaces = ifaces
				if err := cfg.Validate(); err != nil {
					return err
				}
			}
			return serve(cmd, file, cfg, unknown, agent.New)
		},
	}
	cmd.Flags().StringVar(&file, "config", "", "config file (JSON)")
	cmd.Flags().StringArrayVar(&ifaces, "interface", nil, "interface to attach the kernel datapath to (repeatable)")
	return cmd
}

func newProxyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "proxy", Short: "The registry proxy alone"}
	var file string
	start := &cobra.Command{
		Use:   "start [--config FILE]",
		Short: "Run the proxy and the admin listener alone: no BPF, no WebSocket server, no config bus",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, unknown, err := config.LoadLenient(file, nil)
			if err != nil {
				return err
			}
			return serve(cmd, file, cfg, unknown, agent.NewProxyOnly)
		},
	}
	start.Flags().StringVar(&file, "config", "", "config file (JSON)")
	cmd.AddCommand(start)
	return cmd
}

// serve builds an agent with newAgent, binds its listeners and serves until
// SIGINT or SIGTERM; SIGHUP re-reads file and applies it (a bad file changes
// nothing: the error is logged). Logs are JSON lines on stderr through a
// bounded buffer (internal/logging): a reader that stalls loses lines,
// counted in regedge_log_dropped_total, and never holds a request.
func serve(cmd *cobra.Command, file string, cfg *config.Config, unknown []string, newAgent func(*config.Config, *slog.Logger, ...agent.Option) (*agent.Agent, error)) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveUntil(ctx, cmd.ErrOrStderr(), file, cfg, unknown, newAgent, nil)
}

// serveUntil is serve until ctx is done; listening, when set, is given the
// agent once its listeners are bound (tests).
func serveUntil(ctx context.Context, stderr io.Writer, file string, cfg *config.Config, unknown []string,
	newAgent func(*config.Config, *slog.Logger, ...agent.Option) (*agent.Agent, error), listening func(*agent.Agent)) error {
	out := logging.New(stderr, cfg.LogLevel(), logBuffer)
	defer func() { _ = out.Close() }() // it flushes what it can within 2 s and always returns nil
	log := out.Logger
	a, err := newAgent(cfg, log, agent.WithOutput(out), agent.WithBuildInfo(version, commit)) // access lines: the same JSON, a cheaper encoder
	if err != nil {
		return err
	}
	if err := a.Listen(); err != nil {
		return err
	}
	a.SetUnknownKeys(file, unknown)
	if listening != nil {
		listening(a)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				c, unknown, err := config.LoadLenient(file, nil)
				if err == nil {
					err = a.Reload(c)
				}
				if err == nil {
					a.SetUnknownKeys(file, unknown)
				}
				if err != nil {
					log.Error("config reload refused", "err", err)
				}
			}
		}
	}()
	return a.Serve(ctx)
}
