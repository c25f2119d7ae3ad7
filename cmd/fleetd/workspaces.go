package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/cli"
)

const workspacesHelp = `Usage: fleetd workspaces list|delete [flags]

Lists or removes workspaces. Same Redis flags as serve.

  fleetd workspaces list [--prefix P]
      print the known workspace ids, one a line
  fleetd workspaces delete W...
      remove each workspace: its devices, sessions, usage, members, API keys
      and the index entries of its devices, in bounded steps

Load-test leftovers: fleetd workspaces list --prefix lt- | xargs fleetd workspaces delete

Run 'fleetd workspaces <subcommand> --help' for its flags.`

func workspacesCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	sub, args, err := group("workspaces", workspacesHelp, args, stdout, "list", "delete")
	if err != nil {
		return err
	}
	var rf redisFlags
	fs := cli.New("fleetd workspaces "+sub, "FLEETD_WORKSPACES_", stdout)
	var prefix string
	var asJSON bool
	switch sub {
	case "list":
		fs.Synopsis = "fleetd workspaces list [--prefix P]"
		fs.About = "Prints the ids of the known workspaces, sorted, one a line."
		fs.StringVar(&prefix, "prefix", "", "only workspaces whose id starts with this")
	case "delete":
		fs.Synopsis = "fleetd workspaces delete W..."
		fs.About = `Removes each workspace W: its API keys, the index entries of its devices,
every Redis key of its hash tag (devices, sessions, usage, members,
de-duplication ids) and its entry in the list of workspaces, in steps of
a few hundred entries so that Redis keeps serving everyone else. A workspace
that senders still use may keep what they write meanwhile. Running it again
finishes an interrupted deletion; an unknown workspace is not an error.`
		fs.BoolVar(&asJSON, "json", false, "print what was removed as one JSON object per workspace")
	}
	rf.register(fs)
	if err := fs.Parse(args, getenv); err != nil {
		return err
	}
	switch {
	case sub == "list" && fs.NArg() > 0:
		return fs.Usagef("unexpected argument %q", fs.Arg(0))
	case sub == "list" && prefix != "" && !fleet.ValidID(prefix):
		return fs.Usagef("--prefix must be 1-128 characters of [A-Za-z0-9._:@-]")
	case sub == "delete" && fs.NArg() == 0:
		return fs.Usagef("name at least one workspace")
	}
	for _, w := range fs.Args() {
		if !fleet.ValidID(w) {
			return fs.Usagef("workspace %q is not 1-128 characters of [A-Za-z0-9._:@-]", w)
		}
	}
	store, err := openStore(ctx, &rf)
	if err != nil {
		return err
	}
	defer store.Close()
	if sub == "list" {
		wss, err := store.ListWorkspaces(ctx, prefix)
		if err != nil {
			return fmt.Errorf("workspaces list: %s", fleet.ErrorMessage(err))
		}
		for _, w := range wss {
			fmt.Fprintln(stdout, w)
		}
		return nil
	}
	enc := json.NewEncoder(stdout)
	for _, w := range fs.Args() {
		d, err := store.DeleteWorkspace(ctx, w)
		if err != nil {
			return fmt.Errorf("workspaces delete %s: %s", w, fleet.ErrorMessage(err))
		}
		if asJSON {
			enc.Encode(d)
		} else {
			fmt.Fprintf(stderr, "deleted workspace %s: %d Redis keys, %d API keys, %d device index entries\n", w, d.Keys, d.APIKeys, d.IndexItems)
		}
	}
	return nil
}
