package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/cli"
	"github.com/fleetd/fleetd/internal/redistest"
)

// commandPaths is every command and subcommand of fleetd, as typed.
var commandPaths = [][]string{
	{}, {"serve"}, {"keys"}, {"keys", "create"}, {"keys", "list"}, {"keys", "revoke"},
	{"members"}, {"members", "add"}, {"workspaces"}, {"workspaces", "list"}, {"workspaces", "delete"},
	{"loadtest"}, {"healthcheck"}, {"version"},
}

func noEnv(string) string { return "" }

// TestCLIHelpAndUsageErrors walks every command in-process: --help and -h
// print the usage on stdout and succeed; an unknown flag is a one-line
// usage error (exit 2) that names the flag as typed and points at --help.
func TestCLIHelpAndUsageErrors(t *testing.T) {
	ctx := context.Background()
	for _, path := range commandPaths {
		name := strings.TrimSpace("fleetd " + strings.Join(path, " "))
		for _, h := range []string{"--help", "-h"} {
			var stdout, stderr bytes.Buffer
			err := run(ctx, append(append([]string{}, path...), h), noEnv, &stdout, &stderr)
			if err != nil || cli.ExitCode(err) != 0 || !strings.HasPrefix(stdout.String(), "Usage: ") || stderr.Len() > 0 {
				t.Errorf("%s %s: err %v, stdout %q, stderr %q; want the usage on stdout and nothing else", name, h, err, head(stdout.String()), stderr.String())
			}
		}
		for _, bad := range []string{"--frob", "-frob", "--frob=1"} {
			var stdout, stderr bytes.Buffer
			err := run(ctx, append(append([]string{}, path...), bad), noEnv, &stdout, &stderr)
			var ue *cli.UsageError
			typed, _, _ := strings.Cut(bad, "=")
			switch {
			case !errors.As(err, &ue) || cli.ExitCode(err) != 2:
				t.Errorf("%s %s: err %v (exit %d), want a usage error (exit 2)", name, bad, err, cli.ExitCode(err))
			case strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), typed) || !strings.Contains(err.Error(), "--help"):
				t.Errorf("%s %s: %q, want one line naming %s and pointing at --help", name, bad, err, typed)
			case typed == "-frob" && strings.Contains(err.Error(), "--frob"):
				t.Errorf("%s -frob: %q names the flag otherwise than typed", name, err)
			case stdout.Len()+stderr.Len() > 0:
				t.Errorf("%s %s printed %q %q besides the error", name, bad, stdout.String(), stderr.String())
			}
		}
	}
	// Values are named as typed too, and a missing value.
	for args, want := range map[string]string{
		"serve --max-batch=x":              `invalid value "x" for --max-batch`,
		"serve -addr":                      "flag -addr needs a value",
		"keys create --read-only=maybe":    `invalid boolean value "maybe" for --read-only`,
		"loadtest --verify=sometimes":      `invalid boolean value "sometimes" for --verify`,
		"nope":                             `unknown command "nope"`,
		"keys rotate":                      `unknown subcommand "rotate"`,
		"workspaces delete":                "name at least one workspace",
		"keys revoke":                      "want exactly one key id or key",
		"healthcheck --addr nocolon":       `--addr "nocolon"`,
		"members add --workspace a --role": "flag --role needs a value",
	} {
		err := run(ctx, strings.Fields(args), noEnv, &bytes.Buffer{}, &bytes.Buffer{})
		if cli.ExitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("fleetd %s: %v (exit %d), want a usage error containing %q", args, err, cli.ExitCode(err), want)
		}
	}
	// An environment twin with a bad value is a usage error naming it.
	err := run(ctx, []string{"serve"}, func(k string) string {
		if k == "FLEETD_MAX_BATCH" {
			return "lots"
		}
		return ""
	}, &bytes.Buffer{}, &bytes.Buffer{})
	if cli.ExitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), `FLEETD_MAX_BATCH="lots"`) {
		t.Errorf("FLEETD_MAX_BATCH=lots: %v", err)
	}
}

// TestSubcommandEnvTwinsAreSpecific: a stray FLEETD_WORKSPACE does not
// become the --workspace of `fleetd keys`; FLEETD_KEYS_WORKSPACE does.
func TestSubcommandEnvTwinsAreSpecific(t *testing.T) {
	envm, _ := testBackend(t, map[string]string{"FLEETD_WORKSPACE": "stray", "FLEETD_EMAIL": "x@y.z"})
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"keys", "create"}, func(k string) string { return envm[k] }, &stdout, &stderr)
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--workspace is required") {
		t.Fatalf("keys create with only FLEETD_WORKSPACE set: %v, want the usage error", err)
	}
	if err := run(ctx, []string{"members", "add", "--workspace", "acme"}, func(k string) string { return envm[k] }, &stdout, &stderr); cli.ExitCode(err) != 2 {
		t.Fatalf("members add with only FLEETD_EMAIL set: %v, want a usage error", err)
	}
	envm["FLEETD_KEYS_WORKSPACE"] = "acme"
	envm["FLEETD_KEYS_NAME"] = "from-env"
	if err := run(ctx, []string{"keys", "create"}, func(k string) string { return envm[k] }, &stdout, &stderr); err != nil {
		t.Fatalf("keys create with FLEETD_KEYS_WORKSPACE: %v %s", err, stderr.String())
	}
	stdout.Reset()
	if err := run(ctx, []string{"keys", "list", "--json"}, func(k string) string { return envm[k] }, &stdout, &stderr); err != nil ||
		!strings.Contains(stdout.String(), `"name": "from-env"`) || !strings.Contains(stdout.String(), `"workspace": "acme"`) {
		t.Fatalf("keys list: %v %s", err, stdout.String())
	}
}

func head(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// repoRoot is the module root, two levels up from this package.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// dockerfileBuild returns the Dockerfile's `go build` command line, as its
// RUN runs it (after the --mount options).
func dockerfileBuild(tb testing.TB, dockerfile string) string {
	tb.Helper()
	joined := strings.ReplaceAll(dockerfile, "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "RUN ") || !strings.Contains(line, "go build") {
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "RUN "))
		for len(fields) > 0 && strings.HasPrefix(fields[0], "--mount=") {
			fields = fields[1:]
		}
		return strings.Join(fields, " ")
	}
	tb.Fatal("Dockerfile: no RUN ... go build line")
	return ""
}

// TestImage builds fleetd exactly as the Dockerfile does (its RUN line, run
// by /bin/sh with the build args as environment, as docker build runs it),
// checks the Dockerfile's pins and labels, then walks the real binary's
// commands for exit codes and the split between stdout and stderr.
func TestImage(t *testing.T) {
	root := repoRoot(t)
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := string(df)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}

	t.Run("pins and labels", func(t *testing.T) {
		froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(dockerfile, -1)
		if len(froms) != 2 {
			t.Fatalf("FROM lines: %v", froms)
		}
		if want := "golang:" + string(goVersion[1]); froms[0][1] != want {
			t.Errorf("build stage FROM %s, want %s (the Go release of go.mod)", froms[0][1], want)
		}
		for _, f := range froms {
			img := f[1]
			if img != "scratch" && !regexp.MustCompile(`:v?\d+\.\d+\.\d+(-[a-z0-9.]+)?$|@sha256:[0-9a-f]{64}$`).MatchString(img) {
				t.Errorf("FROM %s is not pinned to a version or digest", img)
			}
		}
		for _, want := range []string{
			"org.opencontainers.image.version=\"${VERSION}\"", "org.opencontainers.image.revision=\"${COMMIT}\"",
			"org.opencontainers.image.source=", "org.opencontainers.image.title=",
			`HEALTHCHECK`, `CMD ["/usr/local/bin/fleetd", "healthcheck"]`, "USER 65532:65532",
			"-X github.com/fleetd/fleetd/internal/buildinfo.Version=${VERSION}", "-X github.com/fleetd/fleetd/internal/buildinfo.Commit=${COMMIT}",
		} {
			if !strings.Contains(dockerfile, want) {
				t.Errorf("Dockerfile lacks %s", want)
			}
		}
	})

	build := dockerfileBuild(t, dockerfile)
	bin := filepath.Join(t.TempDir(), "fleetd")
	if !strings.Contains(build, " -o /out/fleetd ") {
		t.Fatalf("the build command does not write /out/fleetd: %s", build)
	}
	cmd := exec.Command("/bin/sh", "-c", strings.Replace(build, " -o /out/fleetd ", " -o "+bin+" ", 1))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION=test-1.2.3", "COMMIT=abc1234def56")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build command failed: %v\n%s\n%s", err, build, out)
	}
	t.Logf("built with the Dockerfile's command: %s", build)

	exe := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, bin, args...)
		c.Env = []string{"PATH=" + os.Getenv("PATH")}
		var o, e bytes.Buffer
		c.Stdout, c.Stderr = &o, &e
		err := c.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatalf("%v: %v", args, err)
		}
		return o.String(), e.String(), code
	}

	t.Run("version", func(t *testing.T) {
		want := fmt.Sprintf("fleetd test-1.2.3 (commit abc1234def56, %s)\n", runtime.Version())
		for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
			if out, errOut, code := exe(args...); out != want || errOut != "" || code != 0 {
				t.Errorf("fleetd %v = %q %q exit %d, want %q", args, out, errOut, code, want)
			}
		}
	})

	t.Run("help walk", func(t *testing.T) {
		var walk strings.Builder
		for _, path := range commandPaths {
			name := strings.TrimSpace("fleetd " + strings.Join(path, " "))
			out, errOut, code := exe(append(append([]string{}, path...), "--help")...)
			if code != 0 || !strings.HasPrefix(out, "Usage: ") || errOut != "" {
				t.Errorf("%s --help: exit %d, stdout %q, stderr %q", name, code, head(out), errOut)
			}
			bout, berr, bcode := exe(append(append([]string{}, path...), "--frob")...)
			if bcode != 2 || bout != "" || strings.Count(berr, "\n") != 1 || !strings.Contains(berr, "--frob") {
				t.Errorf("%s --frob: exit %d, stdout %q, stderr %q; want exit 2 and one line on stderr", name, bcode, bout, berr)
			}
			fmt.Fprintf(&walk, "%-24s --help: exit %d, %3d lines on stdout, stderr empty | --frob: exit %d, stderr %q\n",
				name, code, strings.Count(out, "\n"), bcode, strings.TrimSpace(berr))
		}
		t.Logf("the --help walk:\n%s", walk.String())
	})

	t.Run("healthcheck", func(t *testing.T) {
		addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
		if _, errOut, code := exe("healthcheck", "--addr", addr, "--timeout", "1s"); code != 1 || !strings.Contains(errOut, "healthcheck:") {
			t.Errorf("healthcheck of nothing: exit %d, stderr %q; want exit 1 and the reason", code, errOut)
		}
	})
}
