// Command fleetd is the fleet-presence control plane: it ingests the webhook
// firehose of a signaling server into Redis and serves the REST API and
// Prometheus metrics from the same state.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetd/fleetd/internal/buildinfo"
	"github.com/fleetd/fleetd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		var ue *cli.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, err)
		} else {
			fmt.Fprintf(os.Stderr, "fleetd: %v\n", err)
		}
	}
	stop()
	os.Exit(cli.ExitCode(err))
}

const usage = `Usage: fleetd [command] [flags]

fleetd: fleet-presence control plane.

Commands:
  serve [flags]                         run the daemon (the default)
  keys create --workspace W [--name N] [--read-only]
                                        mint an API key; the key alone goes to stdout
  keys list --workspace W [--json]      list a workspace's keys (never the keys themselves)
  keys revoke ID|KEY                    revoke a key by id or by the key
  members add --workspace W --email E --role owner|admin|member
                                        add an active member (e.g. the first owner)
  workspaces list [--prefix P]          list the known workspaces
  workspaces delete W...                remove workspaces with their devices, sessions, usage and API keys
  loadtest [flags]                      drive a running fleetd and verify its state
  healthcheck [--addr A]                exit 0 only if the fleetd at A answers /readyz with 200
  version                               print the version, commit and Go version (also --version)

Run 'fleetd <command> --help' for the flags of a command. Every flag has an
environment twin: --redis-url is also FLEETD_REDIS_URL, the --workspace of
'fleetd keys' is FLEETD_KEYS_WORKSPACE.`

// run is fleetd's whole program, callable in-process by tests. Help goes to
// stdout and returns nil; a usage error is a *cli.UsageError (exit 2).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, getenv, stdout, stderr)
	if errors.Is(err, cli.ErrHelp) {
		return nil
	}
	return err
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			fmt.Fprintln(stdout, usage)
			return nil
		case "-version", "--version":
			return versionCmd(args[1:], getenv, stdout)
		}
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stdout, stderr)
	case "keys":
		return keysCmd(ctx, args, getenv, stdout, stderr)
	case "members":
		return membersCmd(ctx, args, getenv, stdout, stderr)
	case "workspaces":
		return workspacesCmd(ctx, args, getenv, stdout, stderr)
	case "loadtest":
		return loadtestCmd(ctx, args, getenv, stdout, stderr)
	case "healthcheck":
		return healthcheckCmd(ctx, args, getenv, stdout, stderr)
	case "version":
		return versionCmd(args, getenv, stdout)
	case "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return &cli.UsageError{Cmd: "fleetd", Msg: fmt.Sprintf("unknown command %q", cmd), Hint: "run 'fleetd --help' for the commands"}
}

// versionCmd prints "fleetd VERSION (commit COMMIT, GOVERSION)".
func versionCmd(args []string, getenv func(string) string, stdout io.Writer) error {
	fs := cli.New("fleetd version", "FLEETD_VERSION_", stdout)
	fs.Synopsis = "fleetd version (or fleetd --version)"
	fs.About = "Prints the version, the commit it was built from and the Go version."
	if err := fs.Parse(args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.Usagef("unexpected argument %q", fs.Arg(0))
	}
	fmt.Fprintln(stdout, versionLine())
	return nil
}

func versionLine() string {
	bi := buildinfo.Get()
	return fmt.Sprintf("fleetd %s (commit %s, %s)", bi.Version, bi.Commit, bi.GoVersion)
}

// group handles a command made of subcommands (keys, members, workspaces):
// --help lists them; a missing or unknown one is a usage error.
func group(name, help string, args []string, stdout io.Writer, subs ...string) (string, []string, error) {
	cmd := "fleetd " + name
	if len(args) == 0 {
		return "", nil, &cli.UsageError{Cmd: cmd, Msg: "missing subcommand: want " + orList(subs), Hint: "run '" + cmd + " --help' for its usage"}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, help)
		return "", nil, cli.ErrHelp
	}
	for _, s := range subs {
		if args[0] == s {
			return s, args[1:], nil
		}
	}
	return "", nil, &cli.UsageError{Cmd: cmd, Msg: fmt.Sprintf("unknown subcommand %q: want %s", args[0], orList(subs)), Hint: "run '" + cmd + " --help' for its usage"}
}

func orList(s []string) string {
	switch len(s) {
	case 1:
		return s[0]
	case 2:
		return s[0] + " or " + s[1]
	}
	out := ""
	for i, x := range s {
		switch {
		case i == len(s)-1:
			out += " or " + x
		case i > 0:
			out += ", " + x
		default:
			out += x
		}
	}
	return out
}
