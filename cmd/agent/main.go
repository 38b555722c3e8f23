// Command regedge is the regedge agent and its operator tool: the agent
// itself (run, proxy start), the wire-format tools (frame, config), the
// kernel, token and cache commands, `top`, and the client commands (install,
// publish); docs/cli.md describes each. This package only wires commands to
// the internal packages.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries an exit code through cobra; its message is printed once.
type exitError struct {
	code   int
	err    error
	silent bool // the command has already said what went wrong
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr is exit status 2: the command line or its input is malformed.
func usageErr(format string, a ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, a...)}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "regedge",
		Short:         "eBPF-accelerated edge agent for package registries",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd(), newConfigCmd(), newFrameCmd(), newRunCmd(), newProxyCmd(), newBPFCmd(), newTokenCmd(), newCacheCmd(), newTopCmd(), newInstallCmd(), newPublishCmd(), newSysdumpCmd())
	return root
}

// execute runs the CLI with args and returns the process exit status.
func execute(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !ee.silent {
			fmt.Fprintln(stderr, "regedge:", err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "regedge:", err)
	return 1
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
