// Package redisstore keeps the fleet state in Redis (a single server or a
// Redis Cluster). It is the only package that imports go-redis and the only
// code that knows key names (keys.go) and Lua scripts (scripts.go).
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// Config says how to reach Redis and how long state lives.
type Config struct {
	// URL is a redis:// or rediss:// URL; ignored when Cluster is set.
	URL string
	// Cluster lists host:port seeds of a Redis Cluster.
	Cluster []string
	// Timeout bounds every Redis call (dial, read, write).
	Timeout time.Duration
	// PoolSize is the connection pool size per node (0: go-redis default).
	PoolSize int
	// LiveSessionBound: a live session whose end has not arrived after this
	// long stops counting as live and is listed as abandoned.
	LiveSessionBound time.Duration
	// Retention is how long session records and daily active-device sets
	// are kept.
	Retention time.Duration
	// DeviceCacheSize bounds the in-process device → workspace cache.
	DeviceCacheSize int
	// MaxKeptSessions bounds the sessions kept per device while they have
	// no home (an unregistered or deleted device): past it the oldest go.
	MaxKeptSessions int
	// NoFunctions runs the scripts by EVALSHA even where Redis has
	// Functions (tests of that path).
	NoFunctions bool
	// ReplayStep bounds the sessions that one placement moves home within
	// its commit (kept events, sessions whose home changed); the rest move
	// in the background (RunReplays).
	ReplayStep int
	// MaxWorkspaces bounds the workspaces that registrations can make known
	// (0: no bound). A request whose registration would pass it is refused
	// whole (EFORBIDDEN), with nothing written.
	MaxWorkspaces int
	// Observe, when set, is called after every Redis call the store makes
	// through its client (one command, or one pipeline: one round trip)
	// with the operation's name, how long it took and its error (nil when
	// it succeeded; a nil reply is a success). Operation names are bounded:
	// the script's name for script calls ("apply", "register", "devices",
	// ...), the store operation for the calls of store.go, apikeys.go and
	// workspace.go ("stats", "ping", "key", ...), else the Redis command
	// ("hget", "sadd") or "pipeline" for a pipeline of several commands.
	// It must be fast and safe for concurrent use.
	Observe func(op string, d time.Duration, err error)
}

// Defaults for Config fields left zero.
const (
	DefaultTimeout          = 800 * time.Millisecond
	DefaultLiveSessionBound = 24 * time.Hour
	DefaultRetention        = 62 * 24 * time.Hour
	DefaultDeviceCacheSize  = 1 << 20
	DefaultMaxKeptSessions  = 10000
	DefaultReplayStep       = 500
)

// Store is the Redis implementation of fleet.Ingester, fleet.Reader,
// fleet.KeyStore and fleet.StatsReader. It is safe for concurrent use.
type Store struct {
	rdb     redis.UniversalClient
	cfg     Config
	cache   *routeCache
	now     func() time.Time
	loadMu  sync.Mutex
	cluster bool
	// lastReload is when the cluster topology was last reloaded (unix ns).
	lastReload atomic.Int64
	// swept is when each workspace was last swept (sweep.lua), unix ms.
	sweepMu sync.Mutex
	swept   map[string]int64
	// keptDropped counts kept sessions dropped for MaxKeptSessions.
	keptDropped atomic.Uint64
	// wsRefused counts registrations refused for MaxWorkspaces.
	wsRefused atomic.Uint64
	// replaysDeferred and replayErrors count replay.go's work.
	replaysDeferred, replayErrors atomic.Uint64
	// functions is whether the scripts run as the Functions library
	// (FCALL) or by EVALSHA.
	functions atomic.Bool
	// refuse, set by tests only, makes validate refuse an event, as for a
	// value the decoder let through.
	refuse func(*fleet.Event) error
	// hookStep, set by tests only, runs after each step of a placement or
	// of a session's move ("placed", "synced", "adopted", "tombstoned",
	// "merged"); an error stands for a crash there.
	hookStep func(step string) error
}

// reloadTopology refreshes the cluster's slot map after a node stopped
// answering. go-redis reloads it on MOVED replies, but a dead master sends
// none: without this, commands for its slots would keep going to the dead
// address after a replica took over. At most once per 500 ms.
func (s *Store) reloadTopology() {
	cc, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return
	}
	now := time.Now().UnixNano()
	last := s.lastReload.Load()
	if now-last < int64(500*time.Millisecond) || !s.lastReload.CompareAndSwap(last, now) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.Timeout)
		defer cancel()
		cc.ReloadState(ctx)
	}()
}

// fail wraps err and, when the store is unreachable, schedules a topology
// reload on a cluster.
func (s *Store) fail(op string, err error) error {
	err = wrap(op, err)
	if fleet.ErrorCode(err) == fleet.EUNAVAILABLE {
		s.reloadTopology()
	}
	return err
}

func init() {
	// go-redis logs dial failures on its own; fleetd reports outages through
	// its answers (503), /readyz and its own logs instead.
	redis.SetLogger(quietLogger{})
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Open connects to Redis and loads the scripts. It fails when Redis cannot
// be reached within the timeout.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.LiveSessionBound <= 0 {
		cfg.LiveSessionBound = DefaultLiveSessionBound
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.DeviceCacheSize <= 0 {
		cfg.DeviceCacheSize = DefaultDeviceCacheSize
	}
	if cfg.MaxKeptSessions <= 0 {
		cfg.MaxKeptSessions = DefaultMaxKeptSessions
	}
	if cfg.ReplayStep <= 0 {
		cfg.ReplayStep = DefaultReplayStep
	}
	s := &Store{cfg: cfg, cache: newRouteCache(cfg.DeviceCacheSize), now: time.Now, swept: map[string]int64{}}
	if len(cfg.Cluster) > 0 {
		s.cluster = true
		s.rdb = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                 cfg.Cluster,
			DialTimeout:           cfg.Timeout,
			ReadTimeout:           cfg.Timeout,
			WriteTimeout:          cfg.Timeout,
			PoolTimeout:           cfg.Timeout,
			PoolSize:              cfg.PoolSize,
			ContextTimeoutEnabled: true,
			MaxRetries:            1,
			MaxRedirects:          8,
			DialerRetries:         1,
		})
	} else {
		opt, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redisstore: parse url: %w", redactURLError(err))
		}
		opt.DialTimeout = cfg.Timeout
		opt.ReadTimeout = cfg.Timeout
		opt.WriteTimeout = cfg.Timeout
		opt.PoolTimeout = cfg.Timeout
		opt.ContextTimeoutEnabled = true
		opt.MaxRetries = 1
		// One dial per attempt: go-redis' default of 5 dials 100 ms apart
		// turns a refused connection into a timeout of the whole call, and
		// the cause ("connection refused") into "context deadline exceeded".
		opt.DialerRetries = 1
		if cfg.PoolSize > 0 {
			opt.PoolSize = cfg.PoolSize
		}
		s.rdb = redis.NewClient(opt)
	}
	if cfg.Observe != nil {
		s.rdb.AddHook(observeHook{cfg.Observe})
	}
	ctx, cancel := context.WithTimeout(ctx, 5*cfg.Timeout)
	defer cancel()
	// Redis may be down at start: the daemon still starts (not ready, 503s)
	// and loads the scripts on the first NOSCRIPT once Redis is back.
	if err := s.loadScripts(ctx); err != nil && !isUnavailable(err) {
		s.rdb.Close()
		return nil, fmt.Errorf("redisstore: open: %w", err)
	}
	return s, nil
}

// isUnknownCommand reports whether Redis does not know a command (FUNCTION
// on miniredis or Redis before 7).
func isUnknownCommand(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "unknown command") || strings.Contains(msg, "unknown subcommand")
}

// redactURLError keeps a password in a malformed URL out of logs.
func redactURLError(err error) error {
	return errors.New(strings.SplitN(err.Error(), "://", 2)[0])
}

// Close closes the connections to Redis.
func (s *Store) Close() error { return s.rdb.Close() }

// Ping reports whether Redis answers (on every master of a cluster).
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		// The masters' own clients do not carry the observe hook.
		start := time.Now()
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
		s.observe("ping", start, err)
		return wrap("ping", err)
	}
	return wrap("ping", s.rdb.Ping(withOp(ctx, "ping")).Err())
}

// SetRefuseHook makes the store refuse, with nothing written, any request
// holding an event for which refuse returns an error, as it refuses values
// it cannot apply; for tests of failure isolation.
func (s *Store) SetRefuseHook(refuse func(*fleet.Event) error) { s.refuse = refuse }

// observeHook reports every call of the store's client to Config.Observe.
type observeHook struct {
	fn func(op string, d time.Duration, err error)
}

func (observeHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h observeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		if op := opOf(ctx, cmd); !connSetup[op] {
			h.fn(op, time.Since(start), callError(err))
		}
		return err
	}
}

func (h observeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		setup := len(cmds) > 0
		for _, c := range cmds {
			setup = setup && connSetup[c.Name()]
		}
		if setup {
			return next(ctx, cmds) // go-redis opening a connection
		}
		start := time.Now()
		err := next(ctx, cmds)
		oerr := callError(err)
		for _, c := range cmds {
			if oerr != nil {
				break
			}
			oerr = callError(c.Err())
		}
		op, _ := ctx.Value(opKey{}).(string)
		if op == "" && len(cmds) > 0 {
			op = opOf(ctx, cmds[0])
			for _, c := range cmds[1:] {
				if opOf(ctx, c) != op {
					op = "pipeline"
					break
				}
			}
		}
		if !connSetup[op] {
			h.fn(op, time.Since(start), oerr)
		}
		return err
	}
}

// connSetup are the commands go-redis sends itself when it opens a
// connection (some fail on older servers, by design): not the store's calls.
var connSetup = map[string]bool{"hello": true, "client": true, "auth": true, "select": true, "readonly": true}

// observe reports a call made outside the hooked client (a cluster's
// per-master calls).
func (s *Store) observe(op string, start time.Time, err error) {
	if s.cfg.Observe != nil {
		s.cfg.Observe(op, time.Since(start), callError(err))
	}
}

func callError(err error) error {
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

// opKey carries the name of the store operation a call belongs to.
type opKey struct{}

// withOp names the store operation of the calls made with ctx, for Observe.
func withOp(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, opKey{}, op)
}

// opOf names a call: its store operation, its script, or its command.
func opOf(ctx context.Context, cmd redis.Cmder) string {
	name := cmd.Name()
	if connSetup[name] {
		return name // sent by go-redis when it opens a connection, whatever the call
	}
	if op, ok := ctx.Value(opKey{}).(string); ok {
		return op
	}
	switch name {
	case "evalsha", "evalsha_ro", "fcall", "fcall_ro":
		if args := cmd.Args(); len(args) > 1 {
			if h, ok := args[1].(string); ok {
				if n, ok := scriptByHash[h]; ok {
					return n
				}
				if n, ok := scriptByFunc[h]; ok {
					return n
				}
			}
		}
	case "function", "script":
		return "load_scripts"
	}
	return name
}

var scriptByHash = func() map[string]string {
	m := make(map[string]string, len(scriptNames))
	for sc, n := range scriptNames {
		m[sc.Hash()] = n
	}
	return m
}()

// SetClock replaces the clock, for tests.
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// loadScripts loads the Functions library on every master, or, where
// Redis has no Functions (miniredis, Redis before 7), every script, so
// that EVALSHA works in pipelines. It runs again whenever Redis answers
// that it lacks them (after a restart without persistence, a new master).
func (s *Store) loadScripts(ctx context.Context) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	load := func(ctx context.Context, c redis.Cmdable) error {
		if !s.cfg.NoFunctions {
			err := c.FunctionLoadReplace(ctx, librarySource).Err()
			if err == nil {
				s.functions.Store(true)
				return nil
			}
			if !isUnknownCommand(err) {
				return err
			}
		}
		s.functions.Store(false)
		for _, sc := range allScripts {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return err
			}
		}
		return nil
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return load(ctx, c) })
	}
	return load(ctx, s.rdb)
}

// wrap turns a Redis error into a fleet error: anything that says the store
// cannot be reached in time is EUNAVAILABLE; the rest is internal.
func wrap(op string, err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	if isUnavailable(err) {
		return fmt.Errorf("redisstore: %s: %w: %w", op, fleet.Errorf(fleet.EUNAVAILABLE, "the state store is unavailable, retry later"), err)
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

func isUnavailable(err error) bool {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) || errors.As(err, &ne) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"LOADING", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "BUSY", "NOSCRIPT", "connection", "EOF", "i/o timeout", "broken pipe", "reset by peer", "refused"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// Raw runs one Redis command, for operations tooling and tests.
func (s *Store) Raw(ctx context.Context, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return wrap("raw", s.rdb.Do(withOp(ctx, "raw"), args...).Err())
}
