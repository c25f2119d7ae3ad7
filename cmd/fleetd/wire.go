package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/loadtest"
	"github.com/fleetd/fleetd/metrics"
	"github.com/fleetd/fleetd/redisstore"
	"github.com/prometheus/client_golang/prometheus"
)

// registerFleetCollector adds the scrape-time fleet collector.
func registerFleetCollector(reg *prometheus.Registry, r fleet.StatsReader, maxWorkspaces int, log *slog.Logger) {
	reg.MustRegister(metrics.NewFleetCollector(r, maxWorkspaces, log))
}

// loadtestCmd runs the load test. Its verifier needs an API key per
// simulated workspace: with Redis configured in the environment
// (FLEETD_REDIS_URL or FLEETD_REDIS_CLUSTER, as for serve) it mints
// read-only keys there; otherwise keys come from --api-key.
func loadtestCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	rf := redisFlags{url: getenv("FLEETD_REDIS_URL"), cluster: getenv("FLEETD_REDIS_CLUSTER"), timeout: 2 * time.Second}
	var opts loadtest.Options
	if rf.configured() {
		var (
			once  sync.Once
			store *redisstore.Store
			err   error
		)
		defer func() {
			if store != nil {
				store.Close()
			}
		}()
		opts.MintKey = func(ctx context.Context, ws string) (string, error) {
			once.Do(func() { store, err = openStore(ctx, &rf) })
			if err != nil {
				return "", err
			}
			key, _, err := createKey(ctx, store, ws, "loadtest", true)
			return key, err
		}
	}
	return loadtest.Main(ctx, args, getenv, stdout, stderr, opts)
}

// redisMode names how serve reaches Redis, for the console.
func redisMode(embedded bool, r *redisFlags) string {
	switch {
	case embedded:
		return "embedded"
	case len(r.clusterAddrs()) > 0:
		return "cluster"
	}
	return "single"
}
