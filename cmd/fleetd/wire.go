package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/cli"
	"github.com/fleetd/fleetd/loadtest"
	"github.com/fleetd/fleetd/metrics"
	"github.com/fleetd/fleetd/redisstore"
	"github.com/prometheus/client_golang/prometheus"
)

// registerFleetCollector adds the scrape-time fleet collector; Close it
// when done (it may walk the overflow workspaces in the background).
func registerFleetCollector(reg *prometheus.Registry, r fleet.StatsReader, maxWorkspaces, overflowRate int, shareFor time.Duration, log *slog.Logger) *metrics.FleetCollector {
	c := metrics.NewFleetCollectorSharing(r, maxWorkspaces, shareFor, log)
	c.SetOverflowRate(overflowRate)
	reg.MustRegister(c)
	return c
}

// loadtestCmd runs the load test. Its verifier needs an API key per
// simulated workspace, and --cleanup a store to delete the run's workspaces
// from: with the Redis flags (--redis-url, --redis-cluster, as for serve,
// and their FLEETD_REDIS_* twins) it uses that Redis; otherwise keys come
// from --api-key.
func loadtestCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	rf := redisFlags{}
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
	open := func(ctx context.Context) (*redisstore.Store, error) {
		if !rf.configured() {
			return nil, loadtest.ErrNoStore
		}
		once.Do(func() { store, err = openStore(ctx, &rf) })
		return store, err
	}
	opts := loadtest.Options{
		RegisterFlags: func(fs *cli.FlagSet) {
			rf.register(fs)
			fs.Lookup("redis-timeout").DefValue = "2s"
			fs.Set("redis-timeout", "2s")
		},
		MintKey: func(ctx context.Context, ws string) (string, error) {
			s, err := open(ctx)
			if err != nil {
				return "", err
			}
			key, _, err := createKey(ctx, s, ws, "loadtest", true)
			return key, err
		},
		Cleanup: func(ctx context.Context, wss []string) error {
			s, err := open(ctx)
			if err != nil {
				return err
			}
			for _, ws := range wss {
				if _, err := s.DeleteWorkspace(ctx, ws); err != nil {
					return fmt.Errorf("delete %s: %s", ws, fleet.ErrorMessage(err))
				}
			}
			return nil
		},
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
