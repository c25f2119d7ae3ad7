// Package loadtest implements `fleetd loadtest`: a webhook firehose
// generator and verifier for a running fleetd (SPEC §7).
//
// A run simulates N devices over W workspaces whose ids carry a random run
// id. The setup phase registers every device (not timed); the timed phase
// sends online/offline flaps and remote sessions, with redeliveries under
// the same delivery id and online changes held back until a newer one was
// acknowledged, in a closed loop (as fast as --connections senders go) or an
// open loop (--rate on a fixed timetable, latency measured from each
// request's scheduled time, so there is no coordinated omission). Bodies are
// encoded before the clock starts. Requests answered 429/503 wait their
// Retry-After and are sent again; any request still unacknowledged after
// --retries fails the run.
//
// Verification replays exactly the acknowledged events through a reference
// model of the SPEC §3 rules and compares, per workspace, the fleet_* series
// of /metrics and the REST API's usage and device lists with it. Sessions are
// stamped "now", so the REST usage check uses fleetd's default period (the
// current UTC month).
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetd/fleetd/internal/cli"
)

// Options are what the fleetd command wires into a load test.
type Options struct {
	// RegisterFlags, when set, adds the wiring command's flags (fleetd's
	// Redis flags) to the load test's, before they are parsed; MintKey and
	// Cleanup read them.
	RegisterFlags func(fs *cli.FlagSet)
	// MintKey returns an API key for workspace ws; the cmd wires it to the
	// Redis store so the verifier can call the REST API of each simulated
	// workspace. It returns ErrNoStore when it cannot (no Redis
	// configured): then the --api-key flag must provide keys (ws=key,...),
	// or --verify=full fails for the workspaces it could not check.
	MintKey func(ctx context.Context, workspace string) (string, error)
	// Cleanup deletes the given workspaces from the store (--cleanup).
	Cleanup func(ctx context.Context, workspaces []string) error
}

// ErrNoStore is what MintKey and Cleanup return when no store is configured.
var ErrNoStore = errors.New("no Redis configured (--redis-url or --redis-cluster)")

// Prefill: how many events are encoded before the timed phase starts. A
// run bounded by --events (or --rate × --duration) is encoded whole up to
// maxPrefillEvents (~190 MB of bodies); an unbounded closed-loop run starts
// with openPrefillEvents and the producer keeps the queue that full while
// the senders run (encoding costs well under a microsecond per event, far
// below what the server spends on it).
const (
	maxPrefillEvents  = 1 << 20
	openPrefillEvents = 64 << 10
)

// Main runs the load test described by args (flags, without the "loadtest" word).
// It prints progress to stderr and the summary to stdout, and returns a
// non-nil error when the run cannot proceed, an event could not be
// delivered, or verification found a difference. --help prints the usage to
// stdout and returns cli.ErrHelp; a bad flag is a *cli.UsageError.
func Main(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer, opts Options) error {
	cfg, err := parseFlags(args, env, stdout, opts.RegisterFlags)
	if err != nil {
		return err
	}
	return execute(ctx, cfg, opts, stdout, stderr)
}

func execute(ctx context.Context, cfg *config, opts Options, stdout, stderr io.Writer) error {
	started := time.Now()
	res := &result{Tool: "fleetd loadtest", Started: started.UTC(), Config: cfg}

	t, err := parseTarget(cfg.Target)
	if err != nil {
		return err
	}
	if cfg.Baseline {
		addr, stop, err := startBaseline()
		if err != nil {
			return err
		}
		defer stop()
		t = target{base: "http://" + addr, addr: addr}
		if cfg.secret == "" {
			cfg.secret = "baseline"
		}
	} else {
		if cfg.secret == "" {
			return errors.New("loadtest: no webhook secret: pass --secret or set FLEETD_WEBHOOK_SECRET")
		}
		if !t.isLoopback() {
			fmt.Fprintf(stderr, "note: --target %s is not a loopback address; load tests are meant for a local fleetd\n", t.base)
		}
	}
	res.Target = t.base
	if err := checkReachable(ctx, t); err != nil {
		return err
	}

	mode := progressOff
	switch cfg.Progress {
	case "auto":
		mode = detectProgress(stderr)
	case "tty":
		mode = progressTTY
	case "plain":
		mode = progressPlain
	}
	res.Mode = "closed loop"
	if cfg.Rate > 0 {
		res.Mode = fmt.Sprintf("open loop at %.0f events/s", cfg.Rate)
	}

	fl := newFleet(cfg.RunID, cfg.Devices, cfg.Workspaces)
	gen := newGenerator(fl, cfg.Seed, cfg.Duplicates, cfg.Reorder, cfg.Connections*cfg.Batch, time.Now)
	p := newPlan(fl, gen, cfg.Batch, cfg.DropEvery)
	p.reserve(cfg.Devices + prefillRequests(cfg)*cfg.Batch)
	s := newSender(t, cfg)
	defer s.hc.CloseIdleConnections()
	var ackSeq atomic.Int64

	writeHeader(stdout, cfg, res)
	setupReqs := (cfg.Devices + cfg.Batch - 1) / cfg.Batch
	setup := runPhase(ctx, phaseConfig{name: "setup", batch: cfg.Batch, workers: cfg.Connections, progress: mode},
		s, &ackSeq, p.setupSource(), setupReqs, stderr)
	res.Setup = summarize(setup)
	var errs []string
	completed := setup.Err == nil
	if setup.Err != nil {
		errs = append(errs, setup.Err.Error())
	} else {
		load := runPhase(ctx, phaseConfig{name: "load", rate: cfg.Rate, batch: cfg.Batch, duration: cfg.Duration, workers: cfg.Connections, progress: mode},
			s, &ackSeq, p.loadSource(cfg.Events), prefillRequests(cfg), stderr)
		res.Load = summarize(load)
		if load.Err != nil {
			completed = false
			errs = append(errs, load.Err.Error())
		}
		res.Percentiles = percentileCurve(load.Hist)
	}
	s.hc.CloseIdleConnections()
	for _, r := range p.all {
		r.body = nil // unsent bodies are no longer needed
	}

	failedReqs, failedEvents := res.Setup.FailedRequests, res.Setup.UnackedEvents
	rejection := res.Setup.FirstRejection
	if res.Load != nil {
		failedReqs += res.Load.FailedRequests
		failedEvents += res.Load.UnackedEvents
		if rejection == "" {
			rejection = res.Load.FirstRejection
		}
	}
	if failedReqs > 0 {
		msg := fmt.Sprintf("%d events in %d requests were never acknowledged", failedEvents, failedReqs)
		if rejection != "" {
			msg += " (first refusal: " + rejection + ")"
		}
		errs = append(errs, msg)
	}
	if cfg.BaselineRPS > 0 && res.Load != nil && !cfg.Baseline {
		res.VsBaseline = res.Load.RequestsPerSec / cfg.BaselineRPS
	}

	switch {
	case cfg.Verify == VerifyOff:
		res.Verification = &verification{SkippedReason: "--verify=off"}
	case cfg.Baseline:
		res.Verification = &verification{SkippedReason: "--baseline: the bare server keeps no state"}
	case !completed || ctx.Err() != nil:
		res.Verification = &verification{SkippedReason: "the run did not complete"}
	default:
		v := &verification{}
		res.Verification = v
		vf := &verifier{
			base:       t.base,
			client:     newVerifyClient(),
			fl:         fl,
			keyFor:     keySource(cfg.apiKeys, opts.MintKey),
			checkUsage: sameMonth(started, time.Now()),
			restWanted: cfg.Verify == VerifyFull,
		}
		facts := countFacts{dropEvery: cfg.DropEvery}
		for _, ph := range []*phaseSummary{res.Setup, res.Load} {
			facts.server.add(ph.Server)
			facts.mismatched += ph.CountMismatches
			facts.unparsable += ph.Unparsable
		}
		verify(ctx, vf, expect(p), facts, v, stderr)
		vf.client.CloseIdleConnections()
		switch {
		case len(v.Differences) > 0:
			errs = append(errs, fmt.Sprintf("verification failed: %d differences", len(v.Differences)))
		case v.RESTSkipped > 0:
			errs = append(errs, fmt.Sprintf("verification incomplete: the REST API of %d of %d workspaces was not checked (no API key)", v.RESTSkipped, v.Workspaces))
		}
	}
	if cfg.Cleanup && !cfg.Baseline {
		if err := cleanup(ctx, fl, opts.Cleanup, stdout); err != nil {
			errs = append(errs, err.Error())
		}
	}
	res.Errors = errs
	res.Passed = len(errs) == 0
	writeSummary(stdout, cfg, res)

	if cfg.JSONPath != "" {
		if err := writeJSON(cfg.JSONPath, res); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if cfg.HTMLPath != "" {
		if err := writeHTML(cfg.HTMLPath, res); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return errors.New("loadtest: " + strings.Join(errs, "; "))
	}
	return nil
}

// prefillRequests is how many timed-phase requests are encoded before the
// clock starts: all of them when the run is bounded by --events or --rate ×
// --duration and that fits maxPrefillEvents.
func prefillRequests(cfg *config) int {
	events := int64(openPrefillEvents)
	if cfg.Events > 0 || cfg.Rate > 0 {
		events = maxPrefillEvents
	}
	if cfg.Events > 0 {
		events = min(events, cfg.Events)
	}
	if cfg.Rate > 0 && cfg.Duration > 0 {
		events = min(events, int64(cfg.Rate*cfg.Duration.Seconds()*1.05)+int64(cfg.Batch))
	}
	return int((events + int64(cfg.Batch) - 1) / int64(cfg.Batch))
}

// keySource returns the API key of a workspace: --api-key first, then
// MintKey; ok is false when neither has one.
func keySource(keys map[string]string, mint func(context.Context, string) (string, error)) func(context.Context, string) (string, bool, error) {
	return func(ctx context.Context, ws string) (string, bool, error) {
		if k, ok := keys[ws]; ok {
			return k, true, nil
		}
		if mint == nil {
			return "", false, nil
		}
		k, err := mint(ctx, ws)
		if errors.Is(err, ErrNoStore) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("mint key: %w", err)
		}
		return k, true, nil
	}
}

// cleanup deletes the run's workspaces through del (--cleanup). It runs
// after verification, since verification reads them.
func cleanup(ctx context.Context, fl *fleet, del func(context.Context, []string) error, stdout io.Writer) error {
	if del == nil {
		return errors.New("--cleanup: " + ErrNoStore.Error())
	}
	wss := make([]string, fl.workspaces)
	for w := range wss {
		wss[w] = fl.workspaceID(w)
	}
	// A cancelled run still cleans up, within a bound of its own.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := del(cctx, wss); err != nil {
		return fmt.Errorf("--cleanup: %w", err)
	}
	fmt.Fprintf(stdout, "cleanup: deleted the %d workspaces of run %s (%s .. %s)\n", len(wss), fl.runID, wss[0], wss[len(wss)-1])
	return nil
}

func sameMonth(a, b time.Time) bool {
	a, b = a.UTC(), b.UTC()
	return a.Year() == b.Year() && a.Month() == b.Month()
}
