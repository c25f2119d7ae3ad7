package redisstore

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// Cursors are the base64url of the last item's sort key. They stay valid
// while items are added or removed: a page starts strictly after the key.
func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, "\x00")))
}

func decodeCursor(c string, n int) ([]string, error) {
	if c == "" {
		return make([]string, n), nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	parts := strings.Split(string(b), "\x00")
	if err != nil || len(parts) != n {
		return nil, fleet.Errorf(fleet.EINVALID, "cursor is malformed: pass next_cursor of the previous page unchanged")
	}
	for _, p := range parts {
		if !fleet.ValidID(p) && !validEmail(p) {
			return nil, fleet.Errorf(fleet.EINVALID, "cursor is malformed: pass next_cursor of the previous page unchanged")
		}
	}
	return parts, nil
}

// validEmail is a loose check used only to accept member cursors.
func validEmail(s string) bool { return len(s) <= 254 && strings.Count(s, "@") == 1 }

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func (s *Store) eval(ctx context.Context, sc *redis.Script, keys []string, args ...any) (*redis.Cmd, error) {
	c := &call{script: sc, keys: keys, args: args}
	if err := s.exec(ctx, []*call{c}); err != nil {
		return nil, err
	}
	return c.cmd, nil
}

// scanBudget bounds the entries one listing script looks at, so a filter
// that matches little never blocks Redis for long: the listing calls the
// script again from where it stopped until the page is full.
const scanBudget = 2000

// ListDevices implements fleet.Reader.
func (s *Store) ListDevices(ctx context.Context, ws string, f fleet.DeviceFilter, cursor string, limit int) (fleet.Page[fleet.Device], error) {
	var page fleet.Page[fleet.Device]
	cur, err := decodeCursor(cursor, 1)
	if err != nil {
		return page, err
	}
	src, onf := kDevs, ""
	if f.Online != nil {
		if *f.Online {
			src = kOn
		} else {
			onf = "0"
		}
	}
	after, os := cur[0], lowerASCII(f.OS)
	more := false
	for {
		cmd, err := s.eval(ctx, devicesScript, []string{wsDevKey(ws)}, src, after, limit+1-len(page.Items), onf, os, scanBudget)
		if err != nil {
			return page, err
		}
		vals, err := cmd.StringSlice()
		if err != nil || len(vals) < 2 {
			return page, fmt.Errorf("redisstore: list devices: bad reply: %v", err)
		}
		for i := 0; i+3 < len(vals); i += 2 {
			if len(page.Items) == limit {
				more = true
				break
			}
			rec, err := parseDeviceRecord(vals[i+1])
			if err != nil {
				return page, fmt.Errorf("redisstore: list devices: %w", err)
			}
			page.Items = append(page.Items, rec.device(ws, vals[i]))
		}
		after = vals[len(vals)-2]
		if more || vals[len(vals)-1] == "1" {
			break
		}
	}
	if more {
		page.Next = encodeCursor(page.Items[len(page.Items)-1].ID)
	}
	return page, nil
}

// Device implements fleet.Reader.
func (s *Store) Device(ctx context.Context, ws, id string) (fleet.Device, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	raw, err := s.rdb.HGet(ctx, wsDevKey(ws), id).Result()
	if err == redis.Nil {
		return fleet.Device{}, errDeviceNotFound(id)
	} else if err != nil {
		return fleet.Device{}, wrap("device", err)
	}
	return decodeDevice(ws, id, raw)
}

func errDeviceNotFound(id string) error {
	return fleet.Errorf(fleet.ENOTFOUND, "device %q not found", id)
}

func decodeDevice(ws, id, raw string) (fleet.Device, error) {
	rec, err := parseDeviceRecord(raw)
	if err != nil {
		return fleet.Device{}, fmt.Errorf("redisstore: device %s: %w", id, err)
	}
	if !rec.placedIn(ws) {
		return fleet.Device{}, errDeviceNotFound(id) // a record kept for its sessions
	}
	return rec.device(ws, id), nil
}

// UnbindDevice implements fleet.Reader.
func (s *Store) UnbindDevice(ctx context.Context, ws, id string) (fleet.Device, error) {
	cmd, err := s.eval(ctx, unbindScript, []string{wsDevKey(ws)}, id)
	if err != nil {
		return fleet.Device{}, err
	}
	raw, err := cmd.Text()
	if err == redis.Nil {
		return fleet.Device{}, errDeviceNotFound(id)
	} else if err != nil {
		return fleet.Device{}, fmt.Errorf("redisstore: unbind: %w", err)
	}
	return decodeDevice(ws, id, raw)
}

// RotateDeviceSecret implements fleet.Reader.
func (s *Store) RotateDeviceSecret(ctx context.Context, ws, id string, secretHash []byte, at time.Time) error {
	cmd, err := s.eval(ctx, rotateScript, []string{wsDevKey(ws)}, id, hex.EncodeToString(secretHash), at.UnixMilli())
	if err != nil {
		return err
	}
	if n, _ := cmd.Int(); n == 0 {
		return errDeviceNotFound(id)
	}
	return nil
}

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
	now, _ := s.clock()
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

// Usage implements fleet.Reader.
func (s *Store) Usage(ctx context.Context, ws string, from, to time.Time) (fleet.Usage, error) {
	u := fleet.Usage{From: from, To: to}
	now, _ := s.clock()
	bound := s.cfg.LiveSessionBound.Milliseconds()
	cmd, err := s.eval(ctx, usageScript, []string{wsDevKey(ws)}, from.UnixMilli(), to.UnixMilli(), now, bound)
	if err != nil {
		return u, err
	}
	v, err := cmd.Int64Slice()
	if err != nil || len(v) != 3 {
		return u, fmt.Errorf("redisstore: usage: bad reply: %v", err)
	}
	u.SessionSeconds, u.ActiveDevices, u.Devices = v[0], v[1], v[2]
	return u, nil
}

type memberRecord struct {
	Role      string `json:"r"`
	Status    string `json:"s"`
	InvitedAt int64  `json:"i"`
}

// ListMembers implements fleet.Reader.
func (s *Store) ListMembers(ctx context.Context, ws string, cursor string, limit int) (fleet.Page[fleet.Member], error) {
	var page fleet.Page[fleet.Member]
	cur, err := decodeCursor(cursor, 1)
	if err != nil {
		return page, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	min := "-"
	if cur[0] != "" {
		min = "(" + cur[0]
	}
	// An index entry without its record (never expected) is skipped, and
	// the page is filled from further entries.
	more := false
	for !more {
		emails, err := s.rdb.ZRangeByLex(ctx, wsKey(ws, kMemIdx), &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit + 1 - len(page.Items))}).Result()
		if err != nil {
			return page, wrap("list members", err)
		}
		if len(emails) == 0 {
			break
		}
		raws, err := s.rdb.HMGet(ctx, wsKey(ws, kMem), emails...).Result()
		if err != nil {
			return page, wrap("list members", err)
		}
		for i, r := range raws {
			min = "(" + emails[i]
			raw, _ := r.(string)
			var m memberRecord
			if raw == "" || json.Unmarshal([]byte(raw), &m) != nil {
				continue
			}
			if len(page.Items) == limit {
				more = true
				break
			}
			page.Items = append(page.Items, fleet.Member{Email: emails[i], Role: m.Role, Status: m.Status, InvitedAt: time.UnixMilli(m.InvitedAt).UTC()})
		}
	}
	if more {
		page.Next = encodeCursor(page.Items[len(page.Items)-1].Email)
	}
	return page, nil
}

// AddMember implements fleet.Reader. Emails are stored lower-cased.
func (s *Store) AddMember(ctx context.Context, ws string, m fleet.Member) error {
	email := strings.ToLower(m.Email)
	rec, _ := json.Marshal(memberRecord{Role: m.Role, Status: m.Status, InvitedAt: m.InvitedAt.UnixMilli()})
	cmd, err := s.eval(ctx, addMemberScript, []string{wsDevKey(ws)}, email, string(rec))
	if err != nil {
		return err
	}
	if n, _ := cmd.Int(); n == 0 {
		return fleet.Errorf(fleet.ECONFLICT, "%s is already a member of this workspace", email)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	return wrap("add member", s.rdb.ZAddNX(ctx, keyWorkspaces, redis.Z{Score: float64(s.now().UnixMilli()), Member: ws}).Err())
}
