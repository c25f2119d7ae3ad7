// Command abuse drives a running fleetd the way an attacker or a careless
// sender would, and reports what it cost fleetd (its RSS, read from
// /proc/<pid>/status) and what the clients got. scripts/bounds.sh starts
// Redis and fleetd and runs it; each case is one bound of the README's
// Limits table:
//
//	unauth    1,000 connections send the headers of a 1 MB webhook without
//	          a secret, then half its body, and hold
//	scrapes   48 concurrent scrapes of /metrics at 10,000 workspaces
//	throttle  about 10 bad API keys a second from one address while a
//	          valid key makes 32 requests
//	kept      100,000 session events for an unregistered device, then its
//	          registration, while another sender posts 200 webhooks a
//	          second: the registration's answers, that sender's latency
//	          before, during and after, what was kept
//	workspaces  /metrics scrape time and RSS at 10,000, 100,000 and
//	          500,000 workspaces of one device each, and when the _overflow
//	          series appears
//	statuses  /metrics scrape time before and after 200,000 sessions ended
//	          with distinct statuses in one workspace
//	listings  session listings filtered by status=failed, status=live and
//	          device_id with limit=50 among 1,000,000 sessions
//
// Loopback only; every case is short and bounded.
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:8080", "fleetd's address")
	flag.IntVar(&o.pid, "pid", 0, "fleetd's process id (its RSS is sampled)")
	flag.StringVar(&o.secret, "secret", "", "a webhook secret fleetd accepts")
	flag.StringVar(&o.key, "key", "", "a valid API key (throttle)")
	flag.IntVar(&o.conns, "conns", 1000, "connections (unauth)")
	flag.IntVar(&o.body, "body", 1_000_000, "declared body bytes (unauth)")
	flag.IntVar(&o.workspaces, "workspaces", 10_000, "workspaces to create (scrapes)")
	flag.IntVar(&o.scrapers, "scrapers", 48, "concurrent scrapes (scrapes)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of concurrent scrapes (scrapes)")
	flag.StringVar(&o.workspace, "workspace", "acme", "the workspace of -key (kept, statuses, listings)")
	flag.IntVar(&o.events, "events", 100_000, "session events kept for the unregistered device (kept)")
	flag.StringVar(&o.otherAddr, "other-addr", "", "another replica on the same Redis: the other sender sends every other webhook there (kept)")
	flag.IntVar(&o.rate, "rate", 200, "webhooks a second of the other sender (kept)")
	flag.IntVar(&o.others, "others", 1000, "registered devices of the other sender (kept)")
	flag.DurationVar(&o.phase, "phase", 3*time.Second, "the other sender's traffic measured before and after the registration (kept)")
	steps := flag.String("steps", "10000,100000,500000", "workspace counts measured in turn (workspaces)")
	flag.IntVar(&o.samples, "samples", 5, "scrapes timed at each point (workspaces, statuses)")
	flag.DurationVar(&o.scrapeGap, "scrape-gap", 1200*time.Millisecond, "pause between timed scrapes: past fleetd's --metrics-share (1 s), so each is a read of its own (workspaces, statuses)")
	flag.DurationVar(&o.overflowWait, "overflow-wait", 2*time.Minute, "longest wait for the _overflow series at each count (workspaces)")
	flag.IntVar(&o.statusCount, "statuses", 200_000, "distinct statuses (statuses)")
	flag.IntVar(&o.sessions, "sessions", 1_000_000, "sessions in the workspace (listings)")
	flag.IntVar(&o.devices, "devices", 1000, "devices they are on (listings)")
	flag.IntVar(&o.failedEvery, "failed-every", 9973, "every n-th session ended failed (listings): rare, so that a scan for them reads much of the history")
	flag.IntVar(&o.liveEvery, "live-every", 10000, "every n-th session live (listings)")
	flag.IntVar(&o.requests, "requests", 50, "requests of each listing (listings)")
	flag.Parse()
	o.out = os.Stdout
	if flag.NArg() != 1 || o.pid == 0 {
		fmt.Fprintln(os.Stderr, "usage: abuse -addr A -pid P [flags] unauth|scrapes|throttle|kept|workspaces|statuses|listings")
		os.Exit(2)
	}
	var err error
	if o.steps, err = parseSteps(*steps); err != nil {
		fmt.Fprintln(os.Stderr, "abuse: -steps:", err)
		os.Exit(2)
	}
	for name, v := range map[string]int{"rate": o.rate, "others": o.others, "devices": o.devices,
		"failed-every": o.failedEvery, "live-every": o.liveEvery, "samples": o.samples} {
		if v < 1 {
			fmt.Fprintf(os.Stderr, "abuse: -%s %d: want at least 1\n", name, v)
			os.Exit(2)
		}
	}
	fmt.Fprintf(o.out, "load average at the start: %s\n", loadavg())
	switch flag.Arg(0) {
	case "unauth":
		err = unauth(o)
	case "scrapes":
		err = scrapes(o)
	case "throttle":
		err = throttle(o)
	case "kept":
		_, err = kept(o)
	case "workspaces":
		_, err = workspaces(o)
	case "statuses":
		_, err = statuses(o)
	case "listings":
		_, err = listings(o)
	default:
		err = fmt.Errorf("unknown case %q", flag.Arg(0))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "abuse:", err)
		os.Exit(1)
	}
	fmt.Fprintf(o.out, "load average at the end: %s\n", loadavg())
}

type options struct {
	addr, secret, key            string
	pid, conns, body             int
	workspaces, scrapers, rounds int

	out                    io.Writer // the report of the newer cases
	workspace, otherAddr   string
	events, rate, others   int
	phase, overflowWait    time.Duration
	scrapeGap              time.Duration
	steps                  []int
	samples, statusCount   int
	sessions, devices      int
	failedEvery, liveEvery int
	requests               int
}

// parseSteps reads increasing counts separated by commas.
func parseSteps(s string) ([]int, error) {
	var steps []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || (len(steps) > 0 && n <= steps[len(steps)-1]) {
			return nil, fmt.Errorf("%q: want increasing counts above 0, separated by commas", s)
		}
		steps = append(steps, n)
	}
	return steps, nil
}

// rss returns the resident set of pid in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// sampler records the highest RSS of pid until stopped.
type sampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func sample(pid int) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if n, err := rss(pid); err == nil && n > s.peak.Load() {
				s.peak.Store(n)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) Stop() int64 { close(s.stop); <-s.done; return s.peak.Load() }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// unauth opens o.conns connections that each send the headers of an
// o.body-byte webhook without a secret and then half of the body, and hold
// them open; it reports fleetd's RSS growth and what the clients got.
func unauth(o options) error {
	base, err := rss(o.pid)
	if err != nil {
		return err
	}
	s := sample(o.pid)
	head := fmt.Sprintf("POST /backend/webhook HTTP/1.1\r\nHost: fleetd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", o.body)
	chunk := bytes.Repeat([]byte(" "), 64<<10)
	var (
		mu      sync.Mutex
		conns   []net.Conn
		answers = map[string]int{}
		wg      sync.WaitGroup
		sem     = make(chan struct{}, 100) // dials in flight
	)
	start := time.Now()
	for range o.conns {
		wg.Go(func() {
			sem <- struct{}{}
			c, err := net.DialTimeout("tcp", o.addr, 5*time.Second)
			<-sem
			if err != nil {
				mu.Lock()
				answers["dial error"]++
				mu.Unlock()
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.WriteString(c, head); err != nil {
				return
			}
			for sent := 0; sent < o.body/2; sent += len(chunk) {
				if _, err := c.Write(chunk[:min(len(chunk), o.body/2-sent)]); err != nil {
					break // fleetd answered and closed
				}
			}
			// What did fleetd answer, if anything, within 3 s?
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			key := "no answer (held open)"
			if err == nil {
				key = fmt.Sprintf("%d, connection closed: %v", resp.StatusCode, resp.Close)
				resp.Body.Close()
			} else if !errors.Is(err, os.ErrDeadlineExceeded) {
				key = "connection closed or reset"
			}
			mu.Lock()
			answers[key]++
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	time.Sleep(time.Second)
	peak := s.Stop()
	after, _ := rss(o.pid)
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("unauth: %d connections × (headers of a %d-byte webhook without a secret + %d bytes of body), sent in %v\n",
		o.conns, o.body, o.body/2, took.Round(time.Millisecond))
	fmt.Printf("unauth: fleetd RSS before %s, peak %s, after %s: growth %s\n", mib(base), mib(peak), mib(after), mib(peak-base))
	keys := make([]string, 0, len(answers))
	for k := range answers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Printf("unauth: clients: %d × %s\n", answers[k], k)
	}
	return served(o)
}

// served checks that fleetd still answers a good webhook.
func served(o options) error {
	if o.secret == "" {
		return nil
	}
	req, _ := http.NewRequest("POST", "http://"+o.addr+"/backend/webhook", strings.NewReader(`[]`))
	req.Header.Set("x-webhook-secret", o.secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("a good webhook afterwards: %w", err)
	}
	resp.Body.Close()
	fmt.Printf("afterwards: a good webhook answers %d\n", resp.StatusCode)
	return nil
}

// scrapes creates o.workspaces workspaces through the webhook, then runs
// o.rounds rounds of o.scrapers concurrent scrapes of /metrics.
func scrapes(o options) error {
	if err := buildWorkspaces(o); err != nil {
		return err
	}
	// As Prometheus asks: gzip. The time is until the last byte is in;
	// whether the scrape has its fleet series is checked afterwards, so
	// decompressing 48 answers on the same 2 cores is not in the figure.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.scrapers, DisableCompression: true}}
	scrape := func() (time.Duration, []byte, error) {
		start := time.Now()
		req, _ := http.NewRequest("GET", "http://"+o.addr+"/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		el := time.Since(start)
		if err != nil || resp.StatusCode != 200 {
			return el, nil, fmt.Errorf("scrape: %d %v", resp.StatusCode, err)
		}
		if resp.Header.Get("Content-Encoding") != "gzip" {
			return el, nil, fmt.Errorf("scrape: not gzip")
		}
		return el, b, nil
	}
	hasFleet := func(gz []byte) bool {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			return false
		}
		b, err := io.ReadAll(zr)
		return err == nil && bytes.Contains(b, []byte("\nfleetd_fleet_collect_success 1\n"))
	}
	// One scrape alone first: it warms fleetd, and is the reference.
	time.Sleep(1500 * time.Millisecond) // past any sharing window
	el, b, err := scrape()
	if err != nil {
		return err
	}
	fmt.Printf("scrapes: one scrape alone: %v (fleet series: %v, %d bytes gzipped)\n", el.Round(time.Millisecond), hasFleet(b), len(b))
	time.Sleep(1500 * time.Millisecond)
	base, err := rss(o.pid)
	if err != nil {
		return err
	}
	s := sample(o.pid)
	var worst time.Duration
	failed := 0
	for r := range o.rounds {
		var mu sync.Mutex
		var times []time.Duration
		var bodies [][]byte
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for range o.scrapers {
			wg.Go(func() {
				<-gate
				el, b, err := scrape()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
				}
				times = append(times, el)
				bodies = append(bodies, b)
			})
		}
		close(gate)
		wg.Wait()
		for _, b := range bodies {
			if b != nil && !hasFleet(b) {
				failed++
			}
		}
		slices.Sort(times)
		worst = max(worst, times[len(times)-1])
		fmt.Printf("scrapes: round %d: %d concurrent scrapes: fastest %v, median %v, slowest %v\n", r+1, o.scrapers,
			times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
		time.Sleep(1500 * time.Millisecond)
	}
	peak := s.Stop()
	fmt.Printf("scrapes: %d workspaces, %d rounds of %d concurrent scrapes: slowest %v, %d without fleet series or failed\n",
		o.workspaces, o.rounds, o.scrapers, worst.Round(time.Millisecond), failed)
	fmt.Printf("scrapes: fleetd RSS before %s, peak %s: growth %s\n", mib(base), mib(peak), mib(peak-base))
	return nil
}

// buildWorkspaces registers one device in each of o.workspaces workspaces
// (online, one ended session), 1,000 events per webhook request, and waits
// until /metrics counts them.
func buildWorkspaces(o options) error {
	now := time.Now().UnixMilli()
	var batch []map[string]any
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		b, _ := json.Marshal(batch)
		batch = batch[:0]
		for try := 0; ; try++ {
			req, _ := http.NewRequest("POST", "http://"+o.addr+"/backend/webhook", bytes.NewReader(b))
			req.Header.Set("x-webhook-secret", o.secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == 200:
				return nil
			case (resp.StatusCode == 503 || resp.StatusCode == 429) && try < 10:
				time.Sleep(time.Second) // Retry-After; the events are idempotent
			default:
				return fmt.Errorf("webhook: %d %s", resp.StatusCode, body)
			}
		}
	}
	for w := range o.workspaces {
		ws, dev := fmt.Sprintf("ws-%05d", w), fmt.Sprintf("dev-%05d", w)
		batch = append(batch,
			map[string]any{"type": "device.registered", "qdDeviceId": dev, "workspaceId": ws, "name": "n", "os": "Linux", "ts": now - 3000},
			map[string]any{"type": "device.online.changed", "qdDeviceId": dev, "online": true, "ts": now - 2000},
			map[string]any{"type": "session.ended", "qdDeviceId": dev, "sessionId": "s-" + dev, "status": "success", "durationSec": 60, "ts": now - 1000})
		if len(batch) >= 999 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	re := regexp.MustCompile(`(?m)^fleetd_fleet_workspaces (\d+)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + o.addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if m := re.FindSubmatch(b); m != nil && string(m[1]) == strconv.Itoa(o.workspaces) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/metrics never counted %d workspaces", o.workspaces)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// throttle sends about 10 made-up API keys a second from this address
// while a valid key makes 32 requests, one every 500 ms, and counts the
// valid key's answers.
func throttle(o options) error {
	if o.key == "" {
		return errors.New("throttle needs -key")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(key string) (int, error) {
		req, _ := http.NewRequest("GET", "http://"+o.addr+"/api/v1/devices", nil)
		req.Header.Set("x-api-key", key)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	stop := make(chan struct{})
	var bad sync.Map
	var attackDone sync.WaitGroup
	attackDone.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			code, err := get("sk_live_" + randomAlnum(40))
			if err == nil {
				n, _ := bad.LoadOrStore(code, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}
	})
	time.Sleep(3 * time.Second) // the attacker has used up the burst
	codes := map[int]int{}
	for range 32 {
		code, err := get(o.key)
		if err != nil {
			return err
		}
		codes[code]++
		time.Sleep(500 * time.Millisecond)
	}
	close(stop)
	attackDone.Wait()
	attacker := map[int]int64{}
	bad.Range(func(k, v any) bool { attacker[k.(int)] = v.(*atomic.Int64).Load(); return true })
	fmt.Printf("throttle: attacker (~10 made-up keys/s from the same address): %v\n", attacker)
	fmt.Printf("throttle: valid key, 32 requests, one every 500 ms: %v (429: %d)\n", codes, codes[429])
	return nil
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomAlnum(n int) string {
	b := make([]byte, n)
	for i := range b {
		k, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alnum))))
		b[i] = alnum[k.Int64()]
	}
	return string(b)
}
