package api

import (
	"context"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// Limits of query parameters, checked before anything reaches the store.
const (
	// maxCursorLen is far above any cursor the store hands out (the
	// base64 of at most two ids or an email).
	maxCursorLen = 1024
	// maxTextParam matches the webhook's limit on name, os and status:
	// a longer filter can match nothing.
	maxTextParam = 256
)

// storeContext bounds the store calls of one request. The request's own
// context is not used: fasthttp cancels it only at server shutdown.
func storeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// pageParams reads limit and cursor. The cursor is passed to the store as
// is: it alone knows the format and answers EINVALID for a malformed one.
func pageParams(args *fasthttp.Args) (limit int, cursor string, err error) {
	limit = fleet.DefaultPageSize
	if args.Has("limit") {
		n, ok := parseSmallUint(args.Peek("limit"))
		if !ok || n < 1 || n > fleet.MaxPageSize {
			return 0, "", fleet.Errorf(fleet.EINVALID, "limit must be a whole number from 1 to %d (default %d)", fleet.MaxPageSize, fleet.DefaultPageSize)
		}
		limit = n
	}
	if c := args.Peek("cursor"); len(c) > 0 {
		if len(c) > maxCursorLen {
			return 0, "", fleet.Errorf(fleet.EINVALID, "cursor is malformed: pass next_cursor of the previous page unchanged")
		}
		cursor = string(c)
	}
	return limit, cursor, nil
}

// parseSmallUint parses decimal digits only (no sign, no spaces), up to
// values that cannot overflow.
func parseSmallUint(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// textParam reads an optional free-text filter (os, status).
func textParam(args *fasthttp.Args, name string) (string, error) {
	v := args.Peek(name)
	if len(v) == 0 {
		return "", nil
	}
	if !utf8.Valid(v) || utf8.RuneCount(v) > maxTextParam {
		return "", fleet.Errorf(fleet.EINVALID, "%s must be at most %d characters of UTF-8", name, maxTextParam)
	}
	return string(v), nil
}

// idParam reads an optional id filter: an invalid one is the client's
// mistake (400), unlike an invalid id in the path, which names nothing.
func idParam(args *fasthttp.Args, name string) (string, error) {
	v := args.Peek(name)
	if len(v) == 0 {
		return "", nil
	}
	if !fleet.ValidID(string(v)) {
		return "", fleet.Errorf(fleet.EINVALID, "%s must be 1 to 128 characters of [A-Za-z0-9._:@-]", name)
	}
	return string(v), nil
}

// pathDeviceID returns the {id} of a device route. The router matches the
// raw path, so a percent-encoded id (a client encoding ':' or '@') is
// decoded here. An id that cannot exist answers exactly like a missing
// device, so the error is ENOTFOUND with the store's wording.
func pathDeviceID(ctx *fasthttp.RequestCtx) (string, error) {
	id, _ := ctx.UserValue("id").(string)
	if strings.IndexByte(id, '%') >= 0 {
		if u, err := url.PathUnescape(id); err == nil {
			id = u
		}
	}
	if !fleet.ValidID(id) {
		return "", fleet.Errorf(fleet.ENOTFOUND, "device %q not found", id)
	}
	return id, nil
}
