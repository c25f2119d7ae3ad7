package loadtest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/fleetd/fleetd/internal/cli"
)

// config is the parsed command line.
type config struct {
	Target      string        `json:"target"`
	Devices     int           `json:"devices"`
	Workspaces  int           `json:"workspaces"`
	RunID       string        `json:"run_id"`
	Seed        uint64        `json:"seed"`
	Connections int           `json:"connections"`
	Rate        float64       `json:"rate"`
	Duration    time.Duration `json:"-"`
	Events      int64         `json:"events"`
	Batch       int           `json:"batch"`
	Duplicates  float64       `json:"duplicates"`
	Reorder     float64       `json:"reorder"`
	Timeout     time.Duration `json:"-"`
	Retries     int           `json:"retries"`
	Verify      string        `json:"verify"`
	Cleanup     bool          `json:"cleanup"`
	JSONPath    string        `json:"-"`
	HTMLPath    string        `json:"-"`
	Baseline    bool          `json:"baseline"`
	BaselineRPS float64       `json:"baseline_rps,omitempty"`
	DropEvery   int           `json:"drop_every,omitempty"`
	Progress    string        `json:"-"`

	// DurationText and TimeoutText are the durations as given, for the JSON result.
	DurationText string `json:"duration"`
	TimeoutText  string `json:"timeout"`

	secret  string            // never printed or written
	apiKeys map[string]string // workspace → key; never printed or written
}

// Verification modes of --verify.
const (
	VerifyFull    = "full"    // /metrics and the REST API of every workspace
	VerifyMetrics = "metrics" // /metrics only
	VerifyOff     = "off"     // no verification
)

// verifyFlag is --verify: a mode, or a bare --verify (full), or the
// booleans of earlier versions (--verify=false is off).
type verifyFlag struct{ mode *string }

func (v verifyFlag) String() string {
	if v.mode == nil {
		return ""
	}
	return *v.mode
}

func (v verifyFlag) Set(s string) error {
	switch s {
	case VerifyFull, "true":
		*v.mode = VerifyFull
	case VerifyMetrics:
		*v.mode = VerifyMetrics
	case VerifyOff, "false":
		*v.mode = VerifyOff
	default:
		return errors.New("want full, metrics or off")
	}
	return nil
}

func (v verifyFlag) IsBoolFlag() bool { return true }

const usageAbout = `Simulates a fleet against a running fleetd: N devices over W workspaces are
registered (setup phase, not timed), then the timed phase sends online/offline
flaps and remote sessions to POST <target>/backend/webhook, with optional
redeliveries (same id) and out-of-order online changes. It prints events/s and
latency percentiles, and with --verify (the default) checks through /metrics
and the REST API that fleetd's final state is exactly what was acknowledged.
Exits non-zero when verification fails or any event could not be delivered.

Modes: closed loop (default: --connections senders, each sends its next
request as soon as the last one is answered) or open loop (--rate: requests
go out on a fixed timetable and latency counts from each scheduled send time,
so a stalling server cannot hide the requests it delayed).

Every run uses fresh ids (workspaces lt-<run-id>-<i>, devices lt-<run-id>-d<i>),
so runs never collide; reusing --run-id against the same fleetd adds to the
old run's state and verification will report differences. --cleanup removes
the run's workspaces (devices, sessions, API keys) from Redis at the end, so
they do not stay in every scrape and dashboard.

Verification (--verify=MODE): full (the default) checks /metrics and the REST
API of every workspace, and fails when the REST API could not be checked (no
API key: give the Redis flags so keys can be minted, or --api-key); metrics
checks /metrics only; off checks nothing.`

const usageFooter = `Examples:
  fleetd loadtest --webhook-secret "$SECRET" --redis-url redis://127.0.0.1:6379 --duration 30s --cleanup
  fleetd loadtest --rate 20000 --batch 50 --duration 1m --json out.json --html out.html
  fleetd loadtest --baseline --duration 10s      # bare-HTTP ceiling of this machine`

// parseFlags parses args with the flags of fleetd's other commands: env
// twins FLEETD_LOADTEST_<FLAG>, except --webhook-secret, which is serve's
// FLEETD_WEBHOOK_SECRET. register, when set, adds the flags of the command
// that wires the load test (its Redis flags). --help prints the usage on
// help and returns cli.ErrHelp; a bad flag is a *cli.UsageError.
func parseFlags(args []string, env func(string) string, help io.Writer, register func(*cli.FlagSet)) (*config, error) {
	cfg := &config{Verify: VerifyFull}
	fs := cli.New("fleetd loadtest", "FLEETD_LOADTEST_", help)
	fs.Synopsis = "fleetd loadtest [flags]"
	fs.About = usageAbout
	fs.Footer = usageFooter
	var apiKeys, secret string
	fs.StringVar(&cfg.Target, "target", "http://127.0.0.1:8080", "base URL of the fleetd to load (loopback is the expectation)")
	fs.StringVar(&secret, "webhook-secret", "", "the webhook secret list of the fleetd under load, as for serve; its first shared (non-whsec_) entry is sent as x-webhook-secret")
	fs.Shared("webhook-secret")
	fs.IntVar(&cfg.Devices, "devices", 2000, "number of simulated devices")
	fs.IntVar(&cfg.Workspaces, "workspaces", 20, "number of workspaces the devices are spread over (round robin; at most --devices)")
	fs.StringVar(&cfg.RunID, "run-id", "", "run id in every workspace/device/session/delivery id, [A-Za-z0-9] 1-32 chars (default: 6 random characters)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "random seed of the event stream (default: random; printed, so a run can be replayed with a new --run-id)")
	fs.IntVar(&cfg.Connections, "connections", 32, "concurrent senders and keep-alive connections (closed loop: in-flight requests; open loop: most in flight)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: target events/s, sent as requests of --batch events on a fixed timetable (0: closed loop, as fast as possible)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the timed phase (0: until --events are sent)")
	fs.Int64Var(&cfg.Events, "events", 0, "events to send in the timed phase, redeliveries included (0: until --duration ends); whichever bound comes first ends the phase")
	fs.IntVar(&cfg.Batch, "batch", 1, "events per request: 1 sends a single JSON object, more send a JSON array")
	fs.Float64Var(&cfg.Duplicates, "duplicates", 0.05, "chance that an event is redelivered later with the same id (the server must count it duplicate)")
	fs.Float64Var(&cfg.Reorder, "reorder", 0.05, "chance that an online change is held back and sent after a newer one of the same device (the server must count it stale)")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "timeout of one HTTP request")
	fs.IntVar(&cfg.Retries, "retries", 20, "retries of a request that got no answer, a 5xx or a 429 (429/503 wait their Retry-After, clamped to 50ms..1s); a request still unacknowledged after them fails the run")
	fs.Var(verifyFlag{&cfg.Verify}, "verify", "after the load, compare fleetd's state with what the acknowledged events imply: --verify=full (/metrics and the REST API; fails if the REST API could not be checked), --verify=metrics (/metrics only) or --verify=off")
	fs.BoolVar(&cfg.Cleanup, "cleanup", false, "at the end, delete the run's workspaces (lt-<run-id>-*) with their devices, sessions and API keys from Redis (needs the Redis flags)")
	fs.StringVar(&apiKeys, "api-key", "", "REST API keys for verification as ws=key,ws=key (needed when the command cannot mint keys itself; without keys the REST checks are skipped, /metrics is still checked)")
	fs.StringVar(&cfg.JSONPath, "json", "", "write the whole result (config, summary, percentiles, per-second timeline, statuses, verification) as JSON to this file")
	fs.StringVar(&cfg.HTMLPath, "html", "", "write a self-contained HTML report (inline SVG charts, opens offline) to this file")
	fs.BoolVar(&cfg.Baseline, "baseline", false, "load an in-process bare fasthttp server on 127.0.0.1 answering 204 instead of --target, with the same connections and bodies, to measure the HTTP ceiling of this machine (no verification)")
	fs.Float64Var(&cfg.BaselineRPS, "baseline-rps", 0, "requests/s of an earlier --baseline run; the summary then says how many times the bare HTTP rate this run reached")
	fs.IntVar(&cfg.DropEvery, "drop-every", 0, "TEST HOOK: pretend to send every Nth event without sending it, still counting it as acknowledged, so verification must fail (proves the verifier catches loss)")
	fs.StringVar(&cfg.Progress, "progress", "auto", "live progress on stderr: auto (rewritten line on a terminal, a line every 2s otherwise), tty, plain or off")
	if register != nil {
		register(fs)
	}
	if err := fs.Parse(args, env); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fs.Usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg.secret = secretFromEnv(secret)
	keys, err := parseAPIKeys(apiKeys)
	if err != nil {
		return nil, fs.Usagef("%v", err)
	}
	cfg.apiKeys = keys
	if err := cfg.validate(); err != nil {
		return nil, fs.Usagef("%v", err)
	}
	if cfg.RunID == "" {
		cfg.RunID = randomRunID()
	}
	for cfg.Seed == 0 {
		cfg.Seed = mrand.Uint64() >> 11 // 53 bits: exact as a JSON number anywhere
	}
	cfg.DurationText, cfg.TimeoutText = cfg.Duration.String(), cfg.Timeout.String()
	return cfg, nil
}

// secretFromEnv picks the shared secret out of fleetd's comma-separated
// secret list: the first entry that is not a whsec_ signing key.
func secretFromEnv(v string) string {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" && !strings.HasPrefix(s, "whsec_") {
			return s
		}
	}
	return ""
}

func parseAPIKeys(s string) (map[string]string, error) {
	keys := make(map[string]string)
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		ws, key, ok := strings.Cut(kv, "=")
		if !ok || ws == "" || key == "" {
			return nil, errors.New("--api-key wants ws=key,ws=key")
		}
		keys[ws] = key
	}
	return keys, nil
}

func (c *config) validate() error {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if c.Devices < 1 {
		bad("--devices must be at least 1")
	}
	if c.Workspaces < 1 || c.Workspaces > c.Devices {
		bad("--workspaces must be between 1 and --devices")
	}
	if c.RunID != "" && !validRunID(c.RunID) {
		bad("--run-id must be 1-32 characters of [A-Za-z0-9]")
	}
	if c.Connections < 1 || c.Connections > 10000 {
		bad("--connections must be between 1 and 10000")
	}
	if c.Rate < 0 {
		bad("--rate must not be negative")
	}
	if c.Duration < 0 || c.Events < 0 {
		bad("--duration and --events must not be negative")
	}
	if c.Duration == 0 && c.Events == 0 {
		bad("give --duration or --events (or both)")
	}
	if c.Batch < 1 || c.Batch > 10000 {
		bad("--batch must be between 1 and 10000 (fleetd's default --max-batch is 1000)")
	}
	if c.Duplicates < 0 || c.Duplicates >= 1 || c.Reorder < 0 || c.Reorder >= 1 {
		bad("--duplicates and --reorder must be in [0, 1)")
	}
	if c.Timeout <= 0 {
		bad("--timeout must be positive")
	}
	if c.Retries < 0 {
		bad("--retries must not be negative")
	}
	if c.BaselineRPS < 0 || c.DropEvery < 0 {
		bad("--baseline-rps and --drop-every must not be negative")
	}
	switch c.Progress {
	case "auto", "tty", "plain", "off":
	default:
		bad("--progress must be auto, tty, plain or off")
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func validRunID(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// randomRunID returns 6 random characters of [a-z2-7].
func randomRunID() string { return strings.ToLower(rand.Text()[:6]) }
