package metrics

import (
	"bytes"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"
)

// maxRenders bounds the renderings of /metrics (gather, encode, compress)
// running at once; more scrapes wait for one to end. A rendering of 10,000
// workspaces takes tens of megabytes while it runs.
const maxRenders = 2

// sharedHandler serves /metrics so that concurrent scrapes share one
// rendering: a scrape that asks for the same format and compression as a
// rendering in flight, or as one that ended within ShareFor, gets its bytes.
// What promhttp renders depends on the request only through the negotiated
// format, the compression and the query (name[] filters), so requests with a
// query are rendered on their own, still within maxRenders.
type sharedHandler struct {
	h        http.Handler
	shareFor time.Duration
	sem      chan struct{}

	mu    sync.Mutex
	slots map[renderKey]*renderSlot
}

// renderKey is what a rendering depends on; it has a handful of values.
type renderKey struct {
	format expfmt.Format
	gzip   bool
}

type renderSlot struct {
	inflight, last *rendering
}

// rendering is one response of the wrapped handler. It is immutable once
// done is closed.
type rendering struct {
	done   chan struct{}
	status int
	header http.Header
	body   []byte
	ended  time.Time
}

func newSharedHandler(h http.Handler) *sharedHandler {
	return &sharedHandler{h: h, shareFor: ShareFor, sem: make(chan struct{}, maxRenders), slots: map[renderKey]*renderSlot{}}
}

func (s *sharedHandler) serve(ctx *fasthttp.RequestCtx) {
	req := &http.Request{Method: "GET", URL: &url.URL{Path: "/metrics", RawQuery: string(ctx.URI().QueryString())}, Header: http.Header{}}
	if a := ctx.Request.Header.Peek("Accept"); len(a) > 0 {
		req.Header.Set("Accept", string(a))
	}
	key := renderKey{format: expfmt.NegotiateAccept(req.Header, expfmt.DefaultAcceptedFormats()...), gzip: ctx.Request.Header.HasAcceptEncoding("gzip")}
	if key.gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	} else {
		req.Header.Set("Accept-Encoding", "identity")
	}
	var r *rendering
	if req.URL.RawQuery != "" {
		r = s.render(req)
	} else {
		r = s.shared(key, req)
	}
	for k, vs := range r.header {
		for _, v := range vs {
			ctx.Response.Header.Add(k, v)
		}
	}
	ctx.SetStatusCode(r.status)
	ctx.Response.SetBodyRaw(r.body) // immutable, shared: not copied per scrape
}

// shared returns the rendering in flight for key, or the last one if it
// ended within shareFor, or else renders req.
func (s *sharedHandler) shared(key renderKey, req *http.Request) *rendering {
	s.mu.Lock()
	sl := s.slots[key]
	if sl == nil {
		sl = &renderSlot{}
		s.slots[key] = sl
	}
	if r := sl.last; r != nil && time.Since(r.ended) < s.shareFor {
		s.mu.Unlock()
		return r
	}
	if r := sl.inflight; r != nil {
		s.mu.Unlock()
		<-r.done
		return r
	}
	r := &rendering{done: make(chan struct{}), status: http.StatusInternalServerError, header: http.Header{}}
	sl.inflight = r
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		sl.inflight = nil
		if r.status == http.StatusOK {
			sl.last = r
		}
		s.mu.Unlock()
		close(r.done)
	}()
	res := s.render(req)
	r.status, r.header, r.body, r.ended = res.status, res.header, res.body, res.ended
	return r
}

// render runs the wrapped handler once, within maxRenders.
func (s *sharedHandler) render(req *http.Request) *rendering {
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	w := &recorder{header: http.Header{}, status: http.StatusOK}
	s.h.ServeHTTP(w, req)
	return &rendering{status: w.status, header: w.header, body: w.body.Bytes(), ended: time.Now()}
}

// recorder is the http.ResponseWriter of a rendering.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(status int) {
	if !w.wrote {
		w.status, w.wrote = status, true
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	w.wrote = true
	return w.body.Write(b)
}
