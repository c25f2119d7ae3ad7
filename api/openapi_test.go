package api

import (
	"bytes"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/fleetd/fleetd/metrics"
)

// TestOpenAPIMatchesRouter keeps openapi.json and routes.go in step: every
// routed method and path is an operation of the document and every
// operation is routed.
func TestOpenAPIMatchesRouter(t *testing.T) {
	d := openAPI(t)
	// Metrics is set so /metrics is routed, as in production.
	s := MustNew(t, Config{Metrics: metrics.Handler(metrics.NewRegistry(), metrics.ShareFor)})
	routed := map[string]bool{}
	for method, paths := range s.router().List() {
		for _, p := range paths {
			routed[method+" "+p] = true
		}
	}
	documented := map[string]bool{}
	for path, item := range d.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	if len(routed) == 0 {
		t.Fatal("router lists no route")
	}
	for r := range routed {
		if !documented[r] {
			t.Errorf("%s is routed but not in openapi.json", r)
		}
	}
	for r := range documented {
		if !routed[r] {
			t.Errorf("%s is in openapi.json but not routed", r)
		}
	}
}

// TestOpenAPIDocument checks what the document promises clients: the key
// scheme on every /api/v1 operation, none elsewhere, and a schema for
// every answer.
func TestOpenAPIDocument(t *testing.T) {
	d := openAPI(t)
	if d.Components == nil || d.Components.SecuritySchemes["apiKey"] == nil {
		t.Fatal("no apiKey security scheme")
	}
	if ss := d.Components.SecuritySchemes["apiKey"].Value; ss.Type != "apiKey" || ss.In != "header" || ss.Name != "x-api-key" {
		t.Fatalf("apiKey scheme is %+v", ss)
	}
	if d.Components.Schemas["Error"] == nil {
		t.Fatal("no Error schema")
	}
	var ops []string
	for path, item := range d.Paths.Map() {
		for method, op := range item.Operations() {
			ops = append(ops, method+" "+path)
			keyed := false
			if op.Security != nil {
				for _, req := range *op.Security {
					if _, ok := req["apiKey"]; ok {
						keyed = true
					}
				}
			}
			if want := strings.HasPrefix(path, "/api/v1/"); keyed != want {
				t.Errorf("%s %s: x-api-key required = %v, want %v", method, path, keyed, want)
			}
			for code, ref := range op.Responses.Map() {
				if method == "HEAD" && ref.Value != nil && len(ref.Value.Content) == 0 {
					continue // a HEAD answer has no body to describe
				}
				if ref.Value == nil || len(ref.Value.Content) == 0 {
					t.Errorf("%s %s %s: no content", method, path, code)
					continue
				}
				for ct, mt := range ref.Value.Content {
					if mt.Schema == nil {
						t.Errorf("%s %s %s %s: no schema", method, path, code, ct)
					}
				}
				if code[0] != '2' && ref.Value.Content.Get("application/json").Schema.Ref != "#/components/schemas/Error" {
					t.Errorf("%s %s %s: error answer is not the Error schema", method, path, code)
				}
			}
		}
	}
	sort.Strings(ops)
	t.Logf("%d operations: %s", len(ops), strings.Join(ops, ", "))
}

// TestOpenAPIServed: the document is served without a key, byte for byte.
func TestOpenAPIServed(t *testing.T) {
	s := MustNew(t, Config{})
	base := serveServer(t, s)
	res, err := newClient(t).Get(base + "/api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(res.Body)
	if res.StatusCode != http.StatusOK || res.Header.Get("content-type") != "application/json" || !bytes.Equal(buf.Bytes(), openapiDoc) {
		t.Fatalf("got %d %s, %d bytes", res.StatusCode, res.Header.Get("content-type"), buf.Len())
	}
}

// TestOpenAPIValidationBites makes sure the schema check of the end-to-end
// tests would catch a drifting reply.
func TestOpenAPIValidationBites(t *testing.T) {
	d := openAPI(t)
	req, _ := http.NewRequest("GET", "http://x/api/v1/devices", nil)
	json := http.Header{"Content-Type": {"application/json"}}
	tests := map[string]struct {
		status int
		body   string
		ok     bool
	}{
		"good":                {200, `{"items":[{"id":"d1","name":"n","os":"o","online":true,"last_seen":"2026-01-01T00:00:00Z"}],"next_cursor":null}`, true},
		"extra field":         {200, `{"items":[{"id":"d1","name":"n","os":"o","online":true,"last_seen":"2026-01-01T00:00:00Z","x":1}],"next_cursor":null}`, false},
		"missing field":       {200, `{"items":[{"id":"d1","name":"n","os":"o","last_seen":"2026-01-01T00:00:00Z"}],"next_cursor":null}`, false},
		"sub-second time":     {200, `{"items":[{"id":"d1","name":"n","os":"o","online":true,"last_seen":"2026-01-01T00:00:00.5Z"}],"next_cursor":null}`, false},
		"no next_cursor":      {200, `{"items":[]}`, false},
		"undocumented status": {409, `{"error":"conflict","status":409,"message":"m"}`, false},
		"error body":          {401, `{"error":"unauthorized","status":401,"message":"m"}`, true},
		"bad error body":      {401, `{"error":"unauthorized"}`, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := validateAnswer(d, req, "/api/v1/devices", &response{Status: tc.status, Header: json, Body: []byte(tc.body)})
			if (err == nil) != tc.ok {
				t.Fatalf("valid = %v, want %v (%v)", err == nil, tc.ok, err)
			}
		})
	}
}
