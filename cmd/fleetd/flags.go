package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// flagSet is a flag.FlagSet whose every flag has an environment twin:
// --redis-url ↔ FLEETD_REDIS_URL. The command line wins over the
// environment, the environment over the default.
type flagSet struct {
	*flag.FlagSet
	usage string
}

func newFlagSet(name, usage string, out io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), usage: usage}
	fs.SetOutput(out)
	fs.FlagSet.Usage = func() {
		fmt.Fprintf(out, "%s\n\nFlags (each also read from its environment variable):\n", fs.usage)
		fs.VisitAll(func(f *flag.Flag) {
			def := f.DefValue
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(out, "  --%s  (env %s, default %s)\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
		})
	}
	return fs
}

func envName(flagName string) string {
	return "FLEETD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse parses args, then fills every flag not given on the command line
// from its environment twin.
func (fs *flagSet) parse(args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// redisFlags are the flags shared by every command that talks to Redis.
type redisFlags struct {
	url     string
	cluster string
	timeout time.Duration
}

func (r *redisFlags) register(fs *flagSet) {
	fs.StringVar(&r.url, "redis-url", "", "Redis URL (redis:// or rediss://, with user:password@ and /db if needed); empty for serve means an embedded, non-durable in-process Redis")
	fs.StringVar(&r.cluster, "redis-cluster", "", "comma-separated host:port seeds of a Redis Cluster (instead of --redis-url)")
	fs.DurationVar(&r.timeout, "redis-timeout", 800*time.Millisecond, "bound of every Redis call; a webhook past it answers 503 with Retry-After")
}

func (r *redisFlags) configured() bool { return r.url != "" || r.cluster != "" }

func (r *redisFlags) clusterAddrs() []string {
	if r.cluster == "" {
		return nil
	}
	var out []string
	for _, a := range strings.Split(r.cluster, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}
