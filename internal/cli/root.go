// Package cli holds haplane's subcommands. It parses flags, loads the cluster
// file, builds the parts from internal/ packages and prints their results; it
// holds no logic of its own. Every command that prints data honours
// --output json.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes returned by Run.
const (
	ExitOK      = 0
	ExitFailure = 1 // the operation failed, or a check found a problem
	ExitUsage   = 2 // bad flags, or a cluster file that does not validate
)

// ExitError carries an exit code up to Run. Commands return it when the
// failure is already explained on stderr (a check table, a list of config
// errors) and only the code remains to be reported.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// app is the state shared by every command: where to print, how to log and
// which output format the user asked for. It is built per Run, never global.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	output    string // "text" or "json"
	logLevel  string
	logFormat string

	log *slog.Logger
}

// Run executes haplane with args (without the program name) and returns the
// process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintf(stderr, "haplane: %v\n", ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintf(stderr, "haplane: %v\n", err)
	if isUsageError(err) {
		return ExitUsage
	}
	return ExitFailure
}

// usageError marks errors in how the command was called (flags, arguments).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "haplane",
		Short: "Highly available Kubernetes control planes without a cloud load balancer",
		Long: `haplane makes a Kubernetes control plane highly available on machines with no
cloud load balancer: a VRRP virtual IP, an L4 load balancer in front of every
kube-apiserver, an HA etcd cluster, leader election and the kubeadm-compatible
PKI, from one cluster file and one binary.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setup()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVarP(&a.output, "output", "o", "text", `output format: "text" or "json"`)
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&a.logFormat, "log-format", "text", `log format on stderr: "text" or "json"`)
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))

	for _, mk := range a.commands() {
		root.AddCommand(mk())
	}
	return root
}

// setup validates the global flags and builds the logger.
func (a *app) setup() error {
	switch a.output {
	case "text", "json":
	default:
		return usageError{fmt.Errorf("--output: %q is not one of text, json", a.output)}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", a.logLevel)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch a.logFormat {
	case "text":
		a.log = slog.New(slog.NewTextHandler(a.stderr, opts))
	case "json":
		a.log = slog.New(slog.NewJSONHandler(a.stderr, opts))
	default:
		return usageError{fmt.Errorf("--log-format: %q is not one of text, json", a.logFormat)}
	}
	return nil
}

// logger returns the configured logger; before setup ran (in tests that call
// a command's RunE directly) it discards.
func (a *app) logger() *slog.Logger {
	if a.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.log
}

// print writes v as indented JSON when --output json was given, and calls
// text otherwise. Every command that prints data goes through here.
func (a *app) print(v any, text func(w io.Writer) error) error {
	if a.output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return text(a.stdout)
}

// jsonOutput reports whether the user asked for JSON.
func (a *app) jsonOutput() bool { return a.output == "json" }

// requireFlag fails with a usage error when a required string flag is empty.
func requireFlag(name, value string) error {
	if strings.TrimSpace(value) == "" {
		return usageError{fmt.Errorf("--%s is required", name)}
	}
	return nil
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// group is a command that only holds its subcommands.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short}
	cmd.AddCommand(subs...)
	return cmd
}
