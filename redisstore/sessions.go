package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// Session listings.

// ListSessions implements fleet.Reader.
func (s *Store) ListSessions(ctx context.Context, ws string, f fleet.SessionFilter, cursor string, limit int) (fleet.Page[fleet.Session], error) {
	var page fleet.Page[fleet.Session]
	cur, err := decodeCursor(cursor, 2)
	if err != nil {
		return page, err
	}
	if cur[0] != "" {
		if _, err := strconv.ParseInt(cur[0], 10, 64); err != nil {
			return page, fleet.Errorf(fleet.EINVALID, "cursor is malformed: pass next_cursor of the previous page unchanged")
		}
	}
	now := s.clock()
	bound := s.cfg.LiveSessionBound.Milliseconds()
	src, lo, hi, status := sessionSource(f, now-bound)
	afterScore, afterID := cur[0], cur[1]
	var lastAt string
	more := false
	for {
		cmd, err := s.eval(ctx, sessionsScript, []string{wsDevKey(ws)}, src, afterScore, afterID, limit+1-len(page.Items),
			status, now, bound, scanBudget, lo, hi)
		if err != nil {
			return page, err
		}
		vals, err := cmd.Slice()
		if err != nil || len(vals) < 3 {
			return page, fmt.Errorf("redisstore: list sessions: bad reply: %v", err)
		}
		for i := 0; i+7 < len(vals); i += 5 {
			if len(page.Items) == limit {
				more = true
				break
			}
			sid, _ := vals[i].(string)
			at, _ := vals[i+1].(string)
			st, _ := vals[i+2].(string)
			du, _ := vals[i+3].(int64)
			dev, _ := vals[i+4].(string)
			atMs, _ := strconv.ParseInt(at, 10, 64)
			page.Items = append(page.Items, fleet.Session{ID: sid, DeviceID: dev, Status: st, DurationSec: du, At: time.UnixMilli(atMs).UTC()})
			lastAt = at
		}
		n := len(vals)
		afterScore, _ = vals[n-3].(string)
		afterID, _ = vals[n-2].(string)
		if done, _ := vals[n-1].(string); more || done == "1" {
			break
		}
	}
	if more {
		page.Next = encodeCursor(lastAt, page.Items[len(page.Items)-1].ID)
	}
	return page, nil
}

// sessionSource picks the index that a session listing reads, so that a
// filter costs the page, not the history: the device's sessions for a
// device filter, the sessions without an end (by start) for live and
// abandoned, the ended sessions of the status's label for a status. It
// returns the source, the score range to read and the status the script
// must still check ("" when every entry of the range matches).
func sessionSource(f fleet.SessionFilter, liveFrom int64) (src, lo, hi, status string) {
	lo, hi, status = "-inf", "+inf", f.Status
	switch {
	case f.DeviceID != "":
		return kHD + f.DeviceID, lo, hi, status
	case f.Status == fleet.StatusLive:
		return kLive, strconv.FormatInt(liveFrom, 10), hi, ""
	case f.Status == fleet.StatusAbandoned:
		return kLive, lo, "(" + strconv.FormatInt(liveFrom, 10), ""
	case f.Status != "":
		if l := fleet.StatusLabel(f.Status); l != fleet.StatusOther {
			status = ""
		}
		return kHS + fleet.StatusLabel(f.Status), lo, hi, status
	}
	return kHist, lo, hi, ""
}
