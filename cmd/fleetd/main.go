// Command fleetd is the fleet-presence control plane: it ingests the webhook
// firehose of a signaling server into Redis and serves the REST API and
// Prometheus metrics from the same state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleetd: %v\n", err)
		os.Exit(1)
	}
}

const usage = `fleetd: fleet-presence control plane

Usage:
  fleetd [serve] [flags]                      run the daemon (the default)
  fleetd keys create --workspace W [--name N] [--read-only]
                                              mint an API key; the key alone goes to stdout
  fleetd keys list --workspace W [--json]     list a workspace's keys (never the keys themselves)
  fleetd keys revoke ID|KEY                   revoke a key by id or by the key
  fleetd members add --workspace W --email E --role owner|admin|member
                                              add an active member (e.g. the first owner)
  fleetd loadtest [flags]                     drive a running fleetd and verify its state

Run 'fleetd <command> --help' for the flags of a command. Every flag has an
environment twin: --redis-url is also FLEETD_REDIS_URL.`

// run is fleetd's whole program, callable in-process by tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stdout, stderr)
	case "keys":
		return keysCmd(ctx, args, getenv, stdout, stderr)
	case "members":
		return membersCmd(ctx, args, getenv, stdout, stderr)
	case "loadtest":
		return loadtestCmd(ctx, args, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
