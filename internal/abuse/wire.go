package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// event is one webhook event as the cases send it (the fields of SPEC §3
// they use); zero fields are left out, so online is a pointer.
type event struct {
	Type      string `json:"type"`
	Device    string `json:"qdDeviceId"`
	Workspace string `json:"workspaceId,omitempty"`
	Name      string `json:"name,omitempty"`
	OS        string `json:"os,omitempty"`
	Session   string `json:"sessionId,omitempty"`
	Status    string `json:"status,omitempty"`
	Duration  int    `json:"durationSec,omitempty"`
	Online    *bool  `json:"online,omitempty"`
	TS        int64  `json:"ts,omitempty"`
}

func registration(dev, ws string, ts int64) event {
	return event{Type: "device.registered", Device: dev, Workspace: ws, Name: "n-" + dev, OS: "Linux", TS: ts}
}

// webClient is the client of the cases' own requests: loopback, bounded.
var webClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}}

// post sends one webhook request and returns its status, body and time.
func (o options) post(events []event) (int, []byte, time.Duration, error) {
	b, err := json.Marshal(events)
	if err != nil {
		return 0, nil, 0, err
	}
	req, _ := http.NewRequest("POST", "http://"+o.addr+"/backend/webhook", bytes.NewReader(b))
	req.Header.Set("x-webhook-secret", o.secret)
	req.Header.Set("Content-Type", "application/json")
	return roundTrip(req)
}

// roundTrip sends req and returns the status, body and time until the
// last byte of the body.
func roundTrip(req *http.Request) (int, []byte, time.Duration, error) {
	start := time.Now()
	resp, err := webClient.Do(req)
	if err != nil {
		return 0, nil, time.Since(start), err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, body, time.Since(start), err
}

// postRetried sends events until they are answered 200, retrying a 503 or
// 429 after its Retry-After (a second) up to 10 times: the events are
// idempotent, so a retry applies nothing twice.
func (o options) postRetried(events []event) error {
	for try := 0; ; try++ {
		code, body, _, err := o.post(events)
		switch {
		case err != nil:
			return err
		case code == 200:
			return nil
		case (code == 503 || code == 429) && try < 10:
			time.Sleep(time.Second)
		default:
			return fmt.Errorf("webhook: %d %s", code, body)
		}
	}
}

// send posts the events gen(0..n-1) in requests of at most per events,
// workers requests at once, and returns how long it took.
func (o options) send(n, per, workers int, gen func(i int) event) (time.Duration, error) {
	start := time.Now()
	batches := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			evs := make([]event, 0, per)
			for first := range batches {
				evs = evs[:0]
				for i := first; i < min(n, first+per); i++ {
					evs = append(evs, gen(i))
				}
				if err := o.postRetried(evs); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for first := 0; first < n; first += per {
		select {
		case batches <- first:
		case err = <-errs:
			break feed
		}
	}
	close(batches)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return time.Since(start), err
}

// apiGet asks the REST API with o.key and returns the status, body and
// time until the last byte.
func (o options) apiGet(path string) (int, []byte, time.Duration, error) {
	req, _ := http.NewRequest("GET", "http://"+o.addr+path, nil)
	req.Header.Set("x-api-key", o.key)
	return roundTrip(req)
}

// sessionPage is a page of GET /api/v1/sessions.
type sessionPage struct {
	Items []struct {
		DeviceID string `json:"device_id"`
		Status   string `json:"status"`
	} `json:"items"`
	Next *string `json:"next_cursor"`
}

// listSessions walks every page of GET /api/v1/sessions?query&limit=500
// (at most maxPages) and returns the number of sessions listed.
func (o options) listSessions(query string, maxPages int) (int, error) {
	n, cursor := 0, ""
	for range maxPages {
		path := "/api/v1/sessions?limit=500&" + query
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		code, body, _, err := o.apiGet(path)
		if err != nil {
			return n, err
		}
		if code != 200 {
			return n, fmt.Errorf("GET %s: %d %s", path, code, body)
		}
		var p sessionPage
		if err := json.Unmarshal(body, &p); err != nil {
			return n, err
		}
		n += len(p.Items)
		if p.Next == nil {
			return n, nil
		}
		cursor = *p.Next
	}
	return n, fmt.Errorf("more than %d pages", maxPages)
}

// scrapeResult is one scrape of /metrics.
type scrapeResult struct {
	Took     time.Duration // until the last (gzipped) byte was in
	Fleet    bool          // fleetd_fleet_collect_success 1
	Overflow bool          // a workspace="_overflow" series (HELP lines name it too)
	Gzipped  int           // bytes
	Text     []byte        // decompressed
}

// scrape asks /metrics as Prometheus does (gzip); the time is until the
// last byte is in, decompressing is not in it.
func (o options) scrape() (scrapeResult, error) {
	req, _ := http.NewRequest("GET", "http://"+o.addr+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	start := time.Now()
	resp, err := webClient.Do(req)
	if err != nil {
		return scrapeResult{}, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := scrapeResult{Took: time.Since(start), Gzipped: len(b)}
	if err != nil || resp.StatusCode != 200 {
		return r, fmt.Errorf("scrape: %d %v", resp.StatusCode, err)
	}
	r.Text = b
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return r, err
		}
		if r.Text, err = io.ReadAll(zr); err != nil {
			return r, err
		}
	}
	r.Fleet = bytes.Contains(r.Text, []byte("\nfleetd_fleet_collect_success 1\n"))
	r.Overflow = countSeries(r.Text, "fleet_devices{", `workspace="_overflow"`) > 0
	return r, nil
}

// metricValue returns the value of the series named exactly series (a
// name, or a name with its labels as fleetd writes them) in a scrape.
func metricValue(text []byte, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

// countSeries counts the lines of a scrape that begin with prefix and
// contain label.
func countSeries(text []byte, prefix, label string) int {
	n := 0
	for _, line := range bytes.Split(text, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(prefix)) && bytes.Contains(line, []byte(label)) {
			n++
		}
	}
	return n
}

// spread summarises durations: count, p50, p99 (nearest rank) and max.
type spread struct {
	N             int
	P50, P99, Max time.Duration
}

func spreadOf(ds []time.Duration) spread {
	if len(ds) == 0 {
		return spread{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration { return s[max(0, int(math.Ceil(p*float64(len(s))))-1)] }
	return spread{N: len(s), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

func (s spread) String() string {
	if s.N == 0 {
		return "none"
	}
	return fmt.Sprintf("n=%d p50 %s p99 %s max %s", s.N, ms(s.P50), ms(s.P99), ms(s.Max))
}

// ms writes a duration in milliseconds, with a decimal below 10 ms.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	if f < 10 {
		return fmt.Sprintf("%.1f ms", f)
	}
	return fmt.Sprintf("%.0f ms", f)
}

// loadavg is the first three fields of /proc/loadavg (the load of the
// shared machine while a figure was taken).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// codes writes a count of HTTP status codes in order.
func codes(m map[int]int) string {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	parts := make([]string, 0, len(ks))
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%d×%d", m[k], k))
	}
	return strings.Join(parts, " ")
}
