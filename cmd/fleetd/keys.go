package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/cli"
	"github.com/fleetd/fleetd/redisstore"
)

// apiKeyPrefix starts every API key, as in the public reference.
const apiKeyPrefix = "sk_live_"

// createKey mints a key for workspace ws and stores only its hash.
func createKey(ctx context.Context, ks fleet.KeyStore, ws, name string, readOnly bool) (key, id string, err error) {
	key = apiKeyPrefix + randomAlnum(40)
	id = "key_" + randomAlnum(16)
	h := sha256.Sum256([]byte(key))
	err = ks.CreateKey(ctx, h[:], fleet.APIKey{ID: id, Name: name, Workspace: ws, ReadOnly: readOnly, CreatedAt: time.Now().UTC()})
	return key, id, err
}

// openStore opens the Redis store named by the shared Redis flags; commands
// other than serve need a real Redis.
func openStore(ctx context.Context, r *redisFlags) (*redisstore.Store, error) {
	if !r.configured() {
		return nil, errors.New("no Redis configured: set --redis-url (FLEETD_REDIS_URL) or --redis-cluster (FLEETD_REDIS_CLUSTER)")
	}
	s, err := redisstore.Open(ctx, redisstore.Config{URL: r.url, Cluster: r.clusterAddrs(), Timeout: r.timeout})
	if err != nil {
		return nil, err
	}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("redis: %s", fleet.ErrorMessage(err))
	}
	return s, nil
}

const keysHelp = `Usage: fleetd keys create|list|revoke [flags]

Manage API keys. They talk to the same Redis as serve (--redis-url,
--redis-cluster, FLEETD_REDIS_URL, ...).

  fleetd keys create --workspace W [--name N] [--read-only]
      mint a key; the key alone goes to stdout, its id to stderr
  fleetd keys list --workspace W [--json]
      list a workspace's keys (never the keys themselves)
  fleetd keys revoke ID|KEY
      revoke a key by its id or by the key itself

Run 'fleetd keys <subcommand> --help' for its flags.`

func keysCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	sub, args, err := group("keys", keysHelp, args, stdout, "create", "list", "revoke")
	if err != nil {
		return err
	}
	var rf redisFlags
	fs := cli.New("fleetd keys "+sub, "FLEETD_KEYS_", stdout)
	var ws, name string
	var readOnly, asJSON bool
	switch sub {
	case "create":
		fs.Synopsis = "fleetd keys create --workspace W [--name N] [--read-only]"
		fs.About = "Mints an API key of workspace W: the key alone goes to stdout, its id (id: key_...) to stderr,\nso KEY=$(fleetd keys create --workspace acme) works. Redis keeps only its SHA-256."
		fs.StringVar(&ws, "workspace", "", "workspace the key belongs to (required)")
		fs.StringVar(&name, "name", "cli", "a name to recognise the key by")
		fs.BoolVar(&readOnly, "read-only", false, "the key may only read (POST answers 403)")
	case "list":
		fs.Synopsis = "fleetd keys list --workspace W [--json]"
		fs.About = "Lists the API keys of workspace W (never the keys themselves)."
		fs.StringVar(&ws, "workspace", "", "workspace (required)")
		fs.BoolVar(&asJSON, "json", false, "print a JSON array of {id, name, workspace, read_only, created_at, last_used_at, revoked}")
	case "revoke":
		fs.Synopsis = "fleetd keys revoke ID|KEY"
		fs.About = "Revokes a key by its id (key_...) or by the key itself (sk_live_...); every replica refuses it within --key-cache-ttl."
	}
	rf.register(fs)
	if err := fs.Parse(args, getenv); err != nil {
		return err
	}
	if sub != "revoke" && !fleet.ValidID(ws) {
		return fs.Usagef("--workspace is required: 1-128 characters of [A-Za-z0-9._:@-]")
	}
	if sub == "revoke" && fs.NArg() != 1 {
		return fs.Usagef("want exactly one key id or key, got %d arguments", fs.NArg())
	}
	if sub != "revoke" && fs.NArg() > 0 {
		return fs.Usagef("unexpected argument %q", fs.Arg(0))
	}
	store, err := openStore(ctx, &rf)
	if err != nil {
		return err
	}
	defer store.Close()
	switch sub {
	case "create":
		key, id, err := createKey(ctx, store, ws, name, readOnly)
		if err != nil {
			return fmt.Errorf("keys create: %w", err)
		}
		fmt.Fprintln(stdout, key)
		fmt.Fprintf(stderr, "id: %s\n", id)
		return nil
	case "list":
		keys, err := store.ListKeys(ctx, ws)
		if err != nil {
			return fmt.Errorf("keys list: %w", err)
		}
		return printKeys(stdout, keys, asJSON)
	default:
		arg := fs.Arg(0)
		var k fleet.APIKey
		if strings.HasPrefix(arg, apiKeyPrefix) {
			h := sha256.Sum256([]byte(arg))
			k, err = store.RevokeKey(ctx, "", h[:])
		} else {
			k, err = store.RevokeKey(ctx, arg, nil)
		}
		if err != nil {
			return fmt.Errorf("keys revoke: %s", fleet.ErrorMessage(err))
		}
		fmt.Fprintf(stderr, "revoked %s (workspace %s)\n", k.ID, k.Workspace)
		return nil
	}
}

type keyJSON struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Workspace  string  `json:"workspace"`
	ReadOnly   bool    `json:"read_only"`
	CreatedAt  string  `json:"created_at"`
	LastUsedAt *string `json:"last_used_at"`
	Revoked    bool    `json:"revoked"`
}

func printKeys(w io.Writer, keys []fleet.APIKey, asJSON bool) error {
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		j := keyJSON{ID: k.ID, Name: k.Name, Workspace: k.Workspace, ReadOnly: k.ReadOnly,
			CreatedAt: k.CreatedAt.UTC().Format(time.RFC3339), Revoked: k.Revoked}
		if !k.LastUsedAt.IsZero() {
			s := k.LastUsedAt.UTC().Format(time.RFC3339)
			j.LastUsedAt = &s
		}
		out = append(out, j)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tREAD-ONLY\tCREATED\tLAST USED\tREVOKED")
	for _, k := range out {
		used := "never"
		if k.LastUsedAt != nil {
			used = *k.LastUsedAt
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%v\n", k.ID, k.Name, k.ReadOnly, k.CreatedAt, used, k.Revoked)
	}
	return tw.Flush()
}

const membersHelp = `Usage: fleetd members add --workspace W --email E [--role owner|admin|member]

Adds an active member to a workspace (e.g. its first owner; the API's
members:invite adds invited ones). Same Redis flags as serve.

Run 'fleetd members add --help' for its flags.`

func membersCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if _, args, err := group("members", membersHelp, args, stdout, "add"); err != nil {
		return err
	} else {
		return membersAdd(ctx, args, getenv, stdout, stderr)
	}
}

func membersAdd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var rf redisFlags
	fs := cli.New("fleetd members add", "FLEETD_MEMBERS_", stdout)
	fs.Synopsis = "fleetd members add --workspace W --email E [--role owner|admin|member]"
	fs.About = "Adds an active member to workspace W."
	var ws, email, role string
	fs.StringVar(&ws, "workspace", "", "workspace (required)")
	fs.StringVar(&email, "email", "", "the member's email (required)")
	fs.StringVar(&role, "role", fleet.RoleOwner, "owner, admin or member")
	rf.register(fs)
	if err := fs.Parse(args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if !fleet.ValidID(ws) {
		return fs.Usagef("--workspace is required: 1-128 characters of [A-Za-z0-9._:@-]")
	}
	if role != fleet.RoleOwner && role != fleet.RoleAdmin && role != fleet.RoleMember {
		return fs.Usagef("--role must be owner, admin or member, not %q", role)
	}
	if strings.Count(email, "@") != 1 || strings.ContainsAny(email, " <>") {
		return fs.Usagef("--email %q is not an email address", email)
	}
	store, err := openStore(ctx, &rf)
	if err != nil {
		return err
	}
	defer store.Close()
	err = store.AddMember(ctx, ws, fleet.Member{Email: email, Role: role, Status: fleet.MemberActive, InvitedAt: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("members add: %s", fleet.ErrorMessage(err))
	}
	fmt.Fprintf(stderr, "added %s to %s as %s\n", strings.ToLower(email), ws, role)
	return nil
}
