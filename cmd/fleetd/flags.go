package main

import (
	"strings"
	"time"

	"github.com/fleetd/fleetd/internal/cli"
)

// redisFlags are the flags shared by every command that talks to Redis;
// their env twins are the same everywhere (FLEETD_REDIS_URL, ...).
type redisFlags struct {
	url     string
	cluster string
	timeout time.Duration
}

func (r *redisFlags) register(fs *cli.FlagSet) {
	fs.StringVar(&r.url, "redis-url", "", "Redis URL (redis:// or rediss://, with user:password@ and /db if needed); empty for serve means an embedded, non-durable in-process Redis")
	fs.StringVar(&r.cluster, "redis-cluster", "", "comma-separated host:port seeds of a Redis Cluster (instead of --redis-url)")
	fs.DurationVar(&r.timeout, "redis-timeout", 800*time.Millisecond, "bound of every Redis call; a webhook past it answers 503 with Retry-After")
	fs.Shared("redis-url", "redis-cluster", "redis-timeout")
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
