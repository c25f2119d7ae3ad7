package api

import (
	"context"
	"strconv"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// listSessions is GET /api/v1/sessions: newest "at" first, live sessions
// included with their elapsed duration. A device_id of another workspace
// is not an error: like any unknown device, it has no sessions here.
func (s *Server) listSessions(ctx *fasthttp.RequestCtx, p *principal) error {
	args := ctx.QueryArgs()
	limit, cursor, err := pageParams(args)
	if err != nil {
		return err
	}
	var f fleet.SessionFilter
	if f.DeviceID, err = idParam(args, "device_id"); err != nil {
		return err
	}
	if f.Status, err = textParam(args, "status"); err != nil {
		return err
	}
	ws := p.workspace
	key := readKey{kind: readSessions, ws: ws, cursor: cursor, device: f.DeviceID, status: f.Status, limit: limit}
	return readPage(s, ctx, key, appendSession, func(c context.Context) (fleet.Page[fleet.Session], error) {
		return s.cfg.Reader.ListSessions(c, ws, f, cursor, limit)
	})
}

// appendSession appends a session object of a listing.
func appendSession(b []byte, it *fleet.Session) []byte {
	b = append(b, `{"device_id":`...)
	b = appendString(b, it.DeviceID)
	b = append(b, `,"status":`...)
	b = appendString(b, it.Status)
	b = append(b, `,"duration_sec":`...)
	b = strconv.AppendInt(b, it.DurationSec, 10)
	b = append(b, `,"at":`...)
	b = appendTime(b, it.At)
	return append(b, '}')
}
