// Package cli holds fleetd's command-line conventions (SPEC §2), shared by
// every command and by the load test:
//
//   - every flag has an environment twin; the command line wins over the
//     environment, the environment over the default;
//   - --help and -h print the usage on stdout (Parse returns ErrHelp, which
//     the command turns into exit 0);
//   - a usage error is a *UsageError: one line naming the problem with the
//     flag as it was typed (--frob, not -frob) and a hint, exit 2.
//
// Flags are those of the standard flag package (one or two dashes); a
// library (ff, kong) would not remove code here, since fleetd's help layout,
// env-twin names and error lines are its own.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// ErrHelp is returned by Parse after it printed the usage for --help or -h.
var ErrHelp = flag.ErrHelp

// UsageError is a mistake on the command line or in the environment: the
// command prints it as one line and exits 2.
type UsageError struct {
	Cmd  string // e.g. "fleetd keys create"
	Msg  string // what is wrong, e.g. "unknown flag --frob"
	Hint string // e.g. "run 'fleetd keys create --help' for its flags"
}

func (e *UsageError) Error() string {
	if e.Hint == "" {
		return e.Cmd + ": " + e.Msg
	}
	return e.Cmd + ": " + e.Msg + " (" + e.Hint + ")"
}

// Usagef returns a *UsageError of cmd whose hint points at cmd --help.
func Usagef(cmd, format string, a ...any) error {
	return &UsageError{Cmd: cmd, Msg: fmt.Sprintf(format, a...), Hint: "run '" + cmd + " --help' for its usage"}
}

// ExitCode is the process exit status for err: 0 for nil and ErrHelp, 2
// for a usage error, 1 for anything else.
func ExitCode(err error) int {
	var ue *UsageError
	switch {
	case err == nil || errors.Is(err, ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// FlagSet is a flag.FlagSet whose every flag has an environment twin. The
// twin of a flag is Prefix + the flag's name upper-cased with '-' → '_'
// (FLEETD_KEYS_ + workspace → FLEETD_KEYS_WORKSPACE), except for the flags
// marked Shared, whose twin is FLEETD_ + name: those mean the same in every
// command (--redis-url is FLEETD_REDIS_URL everywhere).
type FlagSet struct {
	*flag.FlagSet
	cmd    string
	prefix string
	shared map[string]bool
	// Synopsis is the first line(s) of the help, after "Usage: ".
	Synopsis string
	// About is printed after the synopsis.
	About string
	// Footer is printed after the flags.
	Footer string
	stdout io.Writer
}

// New returns the flag set of command cmd (e.g. "fleetd keys create"),
// whose own flags have env twins prefixed by prefix (e.g. "FLEETD_KEYS_").
// Help goes to stdout.
func New(cmd, prefix string, stdout io.Writer) *FlagSet {
	fs := &FlagSet{FlagSet: flag.NewFlagSet(cmd, flag.ContinueOnError), cmd: cmd, prefix: prefix, shared: map[string]bool{}, stdout: stdout}
	fs.SetOutput(io.Discard) // errors are reported as UsageError, help by PrintHelp
	return fs
}

// Cmd is the command's name, e.g. "fleetd keys create".
func (fs *FlagSet) Cmd() string { return fs.cmd }

// Shared marks flags whose env twin is FLEETD_ + name, the same in every command.
func (fs *FlagSet) Shared(names ...string) {
	for _, n := range names {
		fs.shared[n] = true
	}
}

// Env returns the environment twin of flag name.
func (fs *FlagSet) Env(name string) string {
	p := fs.prefix
	if fs.shared[name] {
		p = "FLEETD_"
	}
	return p + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// PrintHelp writes the usage to w.
func (fs *FlagSet) PrintHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n", fs.Synopsis)
	if fs.About != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(fs.About, "\n"))
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintf(w, "\nFlags (one or two dashes; each also read from the environment variable named):\n")
		fs.VisitAll(func(f *flag.Flag) {
			def := f.DefValue
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(w, "  --%s  (env %s, default %s)\n      %s\n", f.Name, fs.Env(f.Name), def, f.Usage)
		})
	}
	if fs.Footer != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(fs.Footer, "\n"))
	}
}

// Parse parses args, then fills every flag not given on the command line
// from its environment twin. --help/-h prints the usage on stdout and
// returns ErrHelp; every other problem is a *UsageError.
func (fs *FlagSet) Parse(args []string, getenv func(string) string) error {
	if err := fs.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.PrintHelp(fs.stdout)
			return ErrHelp
		}
		return fs.usageError(asTyped(err.Error(), args))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if !given[f.Name] {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, name := range names {
		env := fs.Env(name)
		v := ""
		if getenv != nil {
			v = getenv(env)
		}
		if v == "" {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fs.usageError(fmt.Sprintf("%s=%q is not a valid value for --%s: %v", env, v, name, err))
		}
	}
	return nil
}

// Usagef returns a *UsageError of this command.
func (fs *FlagSet) Usagef(format string, a ...any) error {
	return fs.usageError(fmt.Sprintf(format, a...))
}

func (fs *FlagSet) usageError(msg string) error {
	return &UsageError{Cmd: fs.cmd, Msg: msg, Hint: "run '" + fs.cmd + " --help' for its usage"}
}

// flagErrRE finds the flag name in the standard flag package's messages:
// "flag provided but not defined: -frob", "flag needs an argument: -addr",
// `invalid value "x" for flag -max-batch: parse error`,
// `invalid boolean value "x" for -json: ...`.
var flagErrRE = regexp.MustCompile(`^(flag provided but not defined|flag needs an argument|invalid value (".*") for flag|invalid boolean value (".*") for|invalid boolean flag):? -?(-?[^\s:]+)(: (.*))?$`)

// asTyped rewrites a message of the flag package so that it names the flag
// as the user typed it.
func asTyped(msg string, args []string) string {
	m := flagErrRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	name := strings.TrimLeft(m[4], "-")
	typed := "--" + name
	for _, a := range args {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		n, _, _ := strings.Cut(a, "=")
		if strings.TrimLeft(n, "-") == name {
			typed = n
			break
		}
	}
	reason := m[6]
	switch {
	case m[1] == "flag provided but not defined":
		return "unknown flag " + typed
	case m[1] == "flag needs an argument":
		return "flag " + typed + " needs a value"
	case m[2] != "":
		return fmt.Sprintf("invalid value %s for %s: %s", m[2], typed, reason)
	case m[3] != "":
		return fmt.Sprintf("invalid boolean value %s for %s: %s", m[3], typed, reason)
	}
	return fmt.Sprintf("invalid boolean flag %s: %s", typed, reason)
}
