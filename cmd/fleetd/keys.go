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

func keysCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("keys: want create, list or revoke")
	}
	sub, args := args[0], args[1:]
	var rf redisFlags
	fs := newFlagSet("keys "+sub, "fleetd keys "+sub, stderr)
	rf.register(fs)
	var ws, name string
	var readOnly, asJSON bool
	switch sub {
	case "create":
		fs.usage = "fleetd keys create --workspace W [--name N] [--read-only]: mint an API key; the key alone goes to stdout, its id to stderr"
		fs.StringVar(&ws, "workspace", "", "workspace the key belongs to (required)")
		fs.StringVar(&name, "name", "", "a name to recognise the key by")
		fs.BoolVar(&readOnly, "read-only", false, "the key may only read (POST answers 403)")
	case "list":
		fs.usage = "fleetd keys list --workspace W [--json]: list keys (never the keys themselves)"
		fs.StringVar(&ws, "workspace", "", "workspace (required)")
		fs.BoolVar(&asJSON, "json", false, "print a JSON array")
	case "revoke":
		fs.usage = "fleetd keys revoke ID|KEY: revoke a key by its id or by the key itself"
	default:
		return fmt.Errorf("keys: unknown subcommand %q (want create, list or revoke)", sub)
	}
	if err := fs.parse(args, getenv); err != nil {
		return err
	}
	if sub != "revoke" && !fleet.ValidID(ws) {
		return errors.New("--workspace is required: 1-128 characters of [A-Za-z0-9._:@-]")
	}
	if sub == "revoke" && fs.NArg() != 1 {
		return errors.New("keys revoke: want exactly one key id or key")
	}
	store, err := openStore(ctx, &rf)
	if err != nil {
		return err
	}
	defer store.Close()
	switch sub {
	case "create":
		if name == "" {
			name = "cli"
		}
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

func membersCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "add" {
		return errors.New("members: want add")
	}
	var rf redisFlags
	fs := newFlagSet("members add", "fleetd members add --workspace W --email E --role owner|admin|member: add an active member", stderr)
	rf.register(fs)
	var ws, email, role string
	fs.StringVar(&ws, "workspace", "", "workspace (required)")
	fs.StringVar(&email, "email", "", "the member's email (required)")
	fs.StringVar(&role, "role", fleet.RoleOwner, "owner, admin or member")
	if err := fs.parse(args[1:], getenv); err != nil {
		return err
	}
	if !fleet.ValidID(ws) {
		return errors.New("--workspace is required: 1-128 characters of [A-Za-z0-9._:@-]")
	}
	if role != fleet.RoleOwner && role != fleet.RoleAdmin && role != fleet.RoleMember {
		return fmt.Errorf("--role must be owner, admin or member, not %q", role)
	}
	if strings.Count(email, "@") != 1 || strings.ContainsAny(email, " <>") {
		return fmt.Errorf("--email %q is not an email address", email)
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
