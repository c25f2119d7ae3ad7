package api

import (
	"strconv"
	"strings"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// maxUsagePeriod bounds [from, to): the store walks one daily aggregate
// per day of the period in a single script, so an unbounded period (year 1
// to 9999) would stall Redis for everyone. A leap year fits; so does
// anything the retention (62 days by default) can answer.
const maxUsagePeriod = 366 * 24 * time.Hour

// usage is GET /api/v1/usage. A missing bound defaults to the bound of the
// current calendar month (UTC): no from means the 1st at 00:00, no to the
// 1st of the next month. Bounds are kept to the millisecond, the store's
// precision, and echoed as such.
func (s *Server) usage(ctx *fasthttp.RequestCtx, p *principal) error {
	from, to, err := s.usagePeriod(ctx.QueryArgs())
	if err != nil {
		return err
	}
	ws := p.workspace
	return s.read(ctx, readKey{kind: readUsage, ws: ws, from: from.UnixMilli(), to: to.UnixMilli()}, func(b []byte) ([]byte, error) {
		c, cancel := storeContext()
		u, err := s.cfg.Reader.Usage(c, ws, from, to)
		cancel()
		if err != nil {
			return b, err
		}
		b = append(b, `{"session_minutes":`...)
		b = strconv.AppendInt(b, u.SessionMinutes(), 10)
		b = append(b, `,"active_devices":`...)
		b = strconv.AppendInt(b, u.ActiveDevices, 10)
		b = append(b, `,"devices":`...)
		b = strconv.AppendInt(b, u.Devices, 10)
		b = append(b, `,"from":"`...)
		b = from.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","to":"`...)
		b = to.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","session_seconds":`...)
		b = strconv.AppendInt(b, u.SessionSeconds, 10)
		return append(b, '}'), nil
	})
}

func (s *Server) usagePeriod(args *fasthttp.Args) (from, to time.Time, err error) {
	now := s.now().UTC()
	from = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	to = from.AddDate(0, 1, 0)
	if v := args.Peek("from"); len(v) > 0 {
		if from, err = parseBound("from", v); err != nil {
			return
		}
	}
	if v := args.Peek("to"); len(v) > 0 {
		if to, err = parseBound("to", v); err != nil {
			return
		}
	}
	if !from.Before(to) {
		return from, to, fleet.Errorf(fleet.EINVALID, "from must be before to")
	}
	if to.Sub(from) > maxUsagePeriod {
		return from, to, fleet.Errorf(fleet.EINVALID, "the period from..to must be at most 366 days")
	}
	return from, to, nil
}

// parseBound parses an RFC 3339 bound. A space where the offset's sign
// belongs is read as '+': it is what an unencoded "+02:00" becomes in a
// query string, a mistake too common to answer with a 400.
func parseBound(name string, v []byte) (time.Time, error) {
	str := string(v)
	if i := strings.LastIndexByte(str, ' '); i >= 19 {
		str = str[:i] + "+" + str[i+1:]
	}
	t, err := time.Parse(time.RFC3339, str)
	// The reply echoes bounds in UTC: one outside years 0000-9999 there
	// could not be written back as RFC 3339.
	if y := t.UTC().Year(); err != nil || y < 0 || y > 9999 {
		return t, fleet.Errorf(fleet.EINVALID, "%s must be an RFC 3339 time such as 2026-06-01T00:00:00Z", name)
	}
	return t.UTC().Truncate(time.Millisecond), nil
}
