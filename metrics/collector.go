package metrics

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fleetd/fleetd/fleet"
	"github.com/prometheus/client_golang/prometheus"
)

// CollectTimeout bounds one read of the fleet state at scrape time. It stays
// below the 5 s scrape timeout of the shipped Prometheus configuration (and
// Prometheus' default of 10 s), so a slow store shows up as
// fleetd_fleet_collect_success 0 in a scrape that still arrives, rather than
// as a failed scrape that also loses the daemon's own metrics.
const CollectTimeout = 4 * time.Second

// OverflowWorkspace is the workspace label value of the series that sums
// every workspace beyond the cardinality cap of a FleetCollector.
const OverflowWorkspace = "_overflow"

// OtherStatus is the status label value that counts ended sessions whose
// status is none of success, failed, timeout, cancelled and error.
const OtherStatus = "other"

// numStatuses counts the status label values: the five known ones plus
// OtherStatus.
const numStatuses = 6

// statusLabels are the status label values by index. "success" comes first
// because every workspace exports it, zero included; OtherStatus is last.
var statusLabels = [numStatuses]string{"success", "failed", "timeout", "cancelled", "error", OtherStatus}

const statusOther = numStatuses - 1

// statusIndex folds a free-text status into its label index.
func statusIndex(s string) int {
	switch s {
	case "success":
		return 0
	case "failed":
		return 1
	case "timeout":
		return 2
	case "cancelled":
		return 3
	case "error":
		return 4
	}
	return statusOther
}

// failureLogEvery is how often a persisting collection failure is logged
// again: every scrape (each few seconds) would flood the log.
const failureLogEvery = time.Minute

// ShareFor is how long the series of one read of the fleet state answer
// further scrapes: concurrent scrapes (several Prometheus servers, a
// dashboard, a curl loop) share one store read, the one in flight or one
// that ended at most this long ago.
const ShareFor = time.Second

// FleetCollector is a prometheus.Collector that reads the fleet state of every
// known workspace from a fleet.StatsReader at scrape time, so that any number
// of fleetd replicas report the same truth, and exports it as const metrics.
// It never mirrors store state into gauges. It is safe for concurrent use.
// Concurrent scrapes share one read of the store and the series built from
// it: a scrape that starts while a read is in flight waits for it, and one
// that starts within ShareFor of the end of a successful read gets its
// series (a failed read is shared only by the scrapes that waited for it),
// so neither the store nor fleetd's memory pays per scrape.
//
// Exported per workspace, zeros included: fleet_devices, fleet_devices_online,
// fleet_sessions_live (gauges), fleet_session_seconds_total and
// fleet_sessions_ended_total{status} (counters). About itself:
// fleetd_fleet_collect_duration_seconds, fleetd_fleet_collect_success,
// fleetd_fleet_workspaces and fleetd_fleet_workspaces_overflow (gauges).
//
// Cardinality is bounded on both labels:
//
//   - workspace: at most maxWorkspaces workspaces get series of their own, the
//     first ones in the order they became known (the store keeps it, so every
//     replica picks the same set, and a workspace never leaves it for a newer
//     one). All the others are summed into one series per metric with
//     workspace="_overflow", so sum() over workspaces stays exact however
//     many there are. A workspace that is literally named "_overflow" always
//     goes into that sum, so it cannot collide with it.
//     fleetd_fleet_workspaces_overflow counts the workspaces summed: when it
//     is above zero, raise --metrics-max-workspaces.
//
// A scrape costs at most the named workspaces' reads, whatever the number
// of workspaces: when there are no more overflow workspaces than named
// ones (or 10,000), the scrape reads them too; beyond that, a background walk sums
// them at a bounded rate (overflowRate workspaces a second), and scrapes
// export its last complete sum, whose age is
// fleetd_fleet_overflow_age_seconds (no _overflow series before the first
// walk completes).
//   - status: the status of session.ended is free text from the sender, so
//     only success, failed, timeout, cancelled and error keep their value;
//     anything else (including case variants such as "Success") is counted as
//     status="other". Every workspace exports status="success" (0 when none)
//     plus every status label it has seen.
//
// When the store cannot be read within CollectTimeout the collector logs a
// warning (repeated at most once a minute while the failure lasts) and
// exports only fleetd_fleet_collect_success 0 and the duration: no fleet
// series at all, rather than zeros that would read as an empty fleet.
type FleetCollector struct {
	r       fleet.StatsReader
	max     int
	log     *slog.Logger
	timeout time.Duration

	devices, online, live, seconds, ended          *prometheus.Desc
	duration, success, workspaces, overflowedCount *prometheus.Desc

	mu        sync.Mutex
	failures  int       // consecutive failed collections
	lastWarn  time.Time // when the last failure was logged
	warnEvery time.Duration

	shareFor time.Duration
	smu      sync.Mutex
	inflight *fleetRead // the read in flight, if any
	last     *fleetRead // the last successful read

	overflowRate int // overflow workspaces a second the walk reads
	omu          sync.Mutex
	walking      bool
	over         *overflowSum // the last complete walk
	stop         chan struct{}
	stopOnce     sync.Once
	overflowAge  *prometheus.Desc
}

// overflowSum is the fleet state summed over the overflow workspaces by
// one walk.
type overflowSum struct {
	t     totals
	n     int
	ended time.Time
}

// syncOverflow is how many overflow workspaces a scrape reads itself even
// when there are fewer named ones: below it, exact sums cost little.
const syncOverflow = 10000

// DefaultOverflowRate is how many overflow workspaces a second the
// background walk reads (--metrics-overflow-rate): 500,000 workspaces are
// summed in under a minute at about 40,000 Redis commands a second.
const DefaultOverflowRate = 10000

// fleetRead is one read of the fleet state and the series built from it.
// Once done is closed it is immutable, and so are its const metrics: any
// number of scrapes may send them at once.
type fleetRead struct {
	done    chan struct{}
	metrics []prometheus.Metric
	ok      bool
	ended   time.Time
}

// NewFleetCollector returns a collector of the fleet state read from r. At
// most maxWorkspaces workspaces get series of their own (see FleetCollector);
// 0 sums every workspace into workspace="_overflow" and a negative value
// lifts the cap. log receives collection failures; nil means slog.Default().
// The collector still has to be registered, e.g. reg.MustRegister(c).
func NewFleetCollector(r fleet.StatsReader, maxWorkspaces int, log *slog.Logger) *FleetCollector {
	return NewFleetCollectorSharing(r, maxWorkspaces, ShareFor, log)
}

// NewFleetCollectorSharing is NewFleetCollector with the time that one
// successful read answers later scrapes (0: only scrapes that arrive while
// it is in flight).
func NewFleetCollectorSharing(r fleet.StatsReader, maxWorkspaces int, shareFor time.Duration, log *slog.Logger) *FleetCollector {
	if log == nil {
		log = slog.Default()
	}
	ws := []string{"workspace"}
	return &FleetCollector{
		r: r, max: maxWorkspaces, log: log, timeout: CollectTimeout, warnEvery: failureLogEvery, shareFor: shareFor,
		overflowRate: DefaultOverflowRate, stop: make(chan struct{}),
		overflowAge: prometheus.NewDesc("fleetd_fleet_overflow_age_seconds",
			"Age of the sum of the workspaces beyond --metrics-max-workspaces that workspace=\"_overflow\" exports (read by a background walk when they outnumber the named ones; 0 when read by the scrape itself).", nil, nil),
		devices: prometheus.NewDesc("fleet_devices",
			"Registered devices of the workspace.", ws, nil),
		online: prometheus.NewDesc("fleet_devices_online",
			"Registered devices of the workspace that are online.", ws, nil),
		live: prometheus.NewDesc("fleet_sessions_live",
			"Live remote sessions of the workspace: started, not ended, and younger than the live-session bound.", ws, nil),
		seconds: prometheus.NewDesc("fleet_session_seconds_total",
			"Seconds of ended remote sessions of the workspace.", ws, nil),
		ended: prometheus.NewDesc("fleet_sessions_ended_total",
			"Ended remote sessions of the workspace by status (success, failed, timeout, cancelled, error; any other status is other).",
			[]string{"workspace", "status"}, nil),
		duration: prometheus.NewDesc("fleetd_fleet_collect_duration_seconds",
			"How long the last read of the fleet state took.", nil, nil),
		success: prometheus.NewDesc("fleetd_fleet_collect_success",
			"Whether the last read of the fleet state succeeded (1) or failed (0).", nil, nil),
		workspaces: prometheus.NewDesc("fleetd_fleet_workspaces",
			"Known workspaces, including those summed into workspace=\"_overflow\".", nil, nil),
		overflowedCount: prometheus.NewDesc("fleetd_fleet_workspaces_overflow",
			"Workspaces summed into workspace=\"_overflow\" because of the --metrics-max-workspaces cap.", nil, nil),
	}
}

// SetOverflowRate sets how many overflow workspaces a second the
// background walk reads (n <= 0: DefaultOverflowRate). Call it before the
// first scrape.
func (c *FleetCollector) SetOverflowRate(n int) {
	if n <= 0 {
		n = DefaultOverflowRate
	}
	c.overflowRate = n
}

// Close stops the background walk of the overflow workspaces.
func (c *FleetCollector) Close() { c.stopOnce.Do(func() { close(c.stop) }) }

// Describe implements prometheus.Collector.
func (c *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.online, c.live, c.seconds, c.ended,
		c.duration, c.success, c.workspaces, c.overflowedCount, c.overflowAge} {
		ch <- d
	}
}

// totals is the fleet state of one workspace, or of the overflow sum, with
// statuses already folded.
type totals struct {
	devices, online, live, seconds int64
	ended                          [numStatuses]int64
}

func (t *totals) add(s *fleet.WorkspaceStats) {
	t.devices += s.Devices
	t.online += s.Online
	t.live += s.LiveSessions
	t.seconds += s.SessionSeconds
	for st, n := range s.Ended {
		t.ended[statusIndex(st)] += n
	}
}

func (t *totals) merge(o *totals) {
	t.devices += o.devices
	t.online += o.online
	t.live += o.live
	t.seconds += o.seconds
	for i, n := range o.ended {
		t.ended[i] += n
	}
}

// Collect implements prometheus.Collector. It sends the series of a shared
// read of the store (see FleetCollector).
func (c *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.shared().metrics {
		ch <- m
	}
}

// shared returns the read in flight, or the last successful one if it
// ended within shareFor, or else makes a new read.
func (c *FleetCollector) shared() *fleetRead {
	c.smu.Lock()
	if r := c.last; r != nil && time.Since(r.ended) < c.shareFor {
		c.smu.Unlock()
		return r
	}
	if r := c.inflight; r != nil {
		c.smu.Unlock()
		<-r.done
		return r
	}
	r := &fleetRead{done: make(chan struct{})}
	c.inflight = r
	c.smu.Unlock()
	// Even a panicking read must release the scrapes waiting on it.
	defer func() {
		r.ended = time.Now()
		c.smu.Lock()
		c.inflight = nil
		c.last = nil
		if r.ok {
			c.last = r
		}
		c.smu.Unlock()
		close(r.done)
	}()
	r.metrics, r.ok = c.read()
	return r
}

// read reads the store once and builds the series of one scrape.
func (c *FleetCollector) read() (out []prometheus.Metric, ok bool) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	stats, known, err := c.r.StatsRange(ctx, 0, c.max)
	var over *overflowSum
	if err == nil && c.max >= 0 && known > len(stats) {
		// The overflow: read now when it is no larger than the named
		// workspaces (or small anyway), else from the background walk.
		if known-len(stats) <= max(c.max, syncOverflow) {
			var t totals
			var rest []fleet.WorkspaceStats
			if rest, _, err = c.r.StatsRange(ctx, len(stats), -1); err == nil {
				for i := range rest {
					t.add(&rest[i])
				}
				over = &overflowSum{t: t, n: len(rest), ended: time.Now()}
			}
		} else {
			over = c.walked(len(stats))
		}
	}
	if err != nil {
		c.failed(err)
		return []prometheus.Metric{
			prometheus.MustNewConstMetric(c.success, prometheus.GaugeValue, 0),
			prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, time.Since(start).Seconds()),
		}, false
	}
	c.succeeded()
	out = make([]prometheus.Metric, 0, 6+6*len(stats)) // about 6 series a workspace
	overflowed := c.emit(&out, stats, over)
	out = append(out,
		prometheus.MustNewConstMetric(c.workspaces, prometheus.GaugeValue, float64(known)),
		prometheus.MustNewConstMetric(c.overflowedCount, prometheus.GaugeValue, float64(overflowed+max(known-len(stats), 0))),
		prometheus.MustNewConstMetric(c.success, prometheus.GaugeValue, 1),
		prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, time.Since(start).Seconds()))
	if over != nil {
		out = append(out, prometheus.MustNewConstMetric(c.overflowAge, prometheus.GaugeValue, time.Since(over.ended).Seconds()))
	}
	return out, true
}

// walked returns the last complete walk of the workspaces from the
// offset-th on (nil before the first), and starts the walk if it is not
// running.
func (c *FleetCollector) walked(offset int) *overflowSum {
	c.omu.Lock()
	defer c.omu.Unlock()
	if !c.walking {
		c.walking = true
		go c.walk(offset)
	}
	return c.over
}

// walk sums the overflow workspaces again and again, a chunk at a time at
// overflowRate workspaces a second, until Close.
func (c *FleetCollector) walk(offset int) {
	const chunk = 1000
	pause := time.Duration(float64(time.Second) * chunk / float64(c.overflowRate))
	for {
		var t totals
		n, ok := 0, true
		for from := offset; ; from += chunk {
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			part, known, err := c.r.StatsRange(ctx, from, chunk)
			cancel()
			if err != nil {
				c.log.Warn("metrics: summing the overflow workspaces failed; trying again", "err", err)
				ok = false
				break
			}
			for i := range part {
				t.add(&part[i])
			}
			n += len(part)
			select {
			case <-c.stop:
				return
			case <-time.After(pause):
			}
			if from+chunk >= known {
				break
			}
		}
		if ok {
			c.omu.Lock()
			c.over = &overflowSum{t: t, n: n, ended: time.Now()}
			c.omu.Unlock()
		}
		select {
		case <-c.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

// emit appends the fleet series of the named workspaces and of the
// overflow sum to out and returns how many named ones went into the
// overflow sum instead (a workspace named "_overflow", or invalid UTF-8).
func (c *FleetCollector) emit(out *[]prometheus.Metric, stats []fleet.WorkspaceStats, over *overflowSum) (overflowed int) {
	// Sort pointers, not the reader's slice: it may be shared.
	ps := make([]*fleet.WorkspaceStats, len(stats))
	for i := range stats {
		ps[i] = &stats[i]
	}
	slices.SortFunc(ps, func(a, b *fleet.WorkspaceStats) int { return cmp.Compare(a.Workspace, b.Workspace) })

	var sum totals
	if over != nil {
		sum = over.t
	}
	for i := 0; i < len(ps); {
		// A reader should not repeat a workspace, but two series with the
		// same labels would fail the whole scrape, so repeats are summed.
		name := ps[i].Workspace
		var t totals
		for ; i < len(ps) && ps[i].Workspace == name; i++ {
			t.add(ps[i])
		}
		// Label values must be valid UTF-8 (MustNewConstMetric panics
		// otherwise); ids are validated upstream, this is a last guard.
		if name == OverflowWorkspace || !utf8.ValidString(name) {
			sum.merge(&t)
			overflowed++
			continue
		}
		c.emitWorkspace(out, name, &t)
	}
	if overflowed > 0 || over != nil {
		c.emitWorkspace(out, OverflowWorkspace, &sum)
	}
	return overflowed
}

func (c *FleetCollector) emitWorkspace(out *[]prometheus.Metric, ws string, t *totals) {
	*out = append(*out,
		prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(t.devices), ws),
		prometheus.MustNewConstMetric(c.online, prometheus.GaugeValue, float64(t.online), ws),
		prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(t.live), ws),
		prometheus.MustNewConstMetric(c.seconds, prometheus.CounterValue, float64(t.seconds), ws))
	for i, n := range t.ended {
		if i == 0 || n != 0 {
			*out = append(*out, prometheus.MustNewConstMetric(c.ended, prometheus.CounterValue, float64(n), ws, statusLabels[i]))
		}
	}
}

// failed logs a failed collection: the first of a series at once, then at
// most once per warnEvery while the failure lasts.
func (c *FleetCollector) failed(err error) {
	c.mu.Lock()
	c.failures++
	n := c.failures
	now := time.Now()
	logIt := n == 1 || now.Sub(c.lastWarn) >= c.warnEvery
	if logIt {
		c.lastWarn = now
	}
	c.mu.Unlock()
	if logIt {
		c.log.Warn("metrics: reading fleet state failed; fleet series are missing from this scrape",
			"err", err, "consecutive_failures", n)
	}
}

// succeeded logs the end of a series of failures.
func (c *FleetCollector) succeeded() {
	c.mu.Lock()
	n := c.failures
	c.failures = 0
	c.mu.Unlock()
	if n > 0 {
		c.log.Info("metrics: reading fleet state works again", "failed_collections", n)
	}
}
