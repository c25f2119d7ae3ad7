package redisstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// deviceRecord is a device as stored in fl:{w:W}:dev (lib.lua, dget):
// "ON,OT,LS,RG,H;" followed by the JSON of the cold fields; the times are
// in base 36, and LS is left out when it equals OT or, without OT, RG.
type deviceRecord struct {
	On       int
	LastSeen int64
	History  string // "" when only its registration here
	coldFields
}

// coldFields are the device fields that only registration and unbind
// change; Go encodes them, the scripts carry them through untouched.
type coldFields struct {
	Name string `json:"n"`
	OS   string `json:"o"`
	User string `json:"u,omitempty"`
	// Unbound is set by unbind: User stays, as the registration's, for the
	// tie-break of registrations with equal ts, but is not shown.
	Unbound int `json:"x,omitempty"`
}

func parseDeviceRecord(raw string) (deviceRecord, error) {
	var r deviceRecord
	head, cold, ok := strings.Cut(raw, ";")
	f := strings.Split(head, ",")
	if !ok || len(f) != 5 {
		return r, fmt.Errorf("malformed device record %q", raw)
	}
	r.On, _ = strconv.Atoi(f[0])
	ls := f[2]
	if ls == "" {
		// Left out: it equals OT or, without OT, RG (lib.lua, dput).
		ls = f[1]
		if ls == "" {
			ls = f[3]
		}
	}
	r.LastSeen, _ = strconv.ParseInt(ls, 36, 64)
	r.History = f[4]
	if err := json.Unmarshal([]byte(cold), &r.coldFields); err != nil {
		return r, fmt.Errorf("malformed device record %q: %w", raw, err)
	}
	return r, nil
}

// placedIn reports whether the record says the device is in workspace ws
// now (a record may stay for a device that moved on, for its sessions).
func (r *deviceRecord) placedIn(ws string) bool {
	if r.History == "" {
		return true
	}
	h, ok := parseHistory(r.History)
	return ok && h.owner() == ws
}

func (r *deviceRecord) device(ws, id string) fleet.Device {
	d := fleet.Device{ID: id, WorkspaceID: ws, Name: r.Name, OS: r.OS, UserID: r.User, Online: r.On == 1,
		LastSeen: time.UnixMilli(r.LastSeen).UTC()}
	if r.Unbound != 0 {
		d.UserID = ""
	}
	return d
}

// sessionRecord is what is known of a session (lib.lua, sget): "D,ST,EN,GD,W,STATUS",
// optionally behind a tombstone "~HOME,".
type sessionRecord struct {
	Device     string
	Start, End int64
	HasStart   bool
	HasEnd     bool
	GivenDur   int64 // -1 when absent
	Written    int64
	Status     string
	Tomb       bool
	TombHome   string
	Settled    bool // a tombstone whose home was seen to hold it all
	hasWritten bool
}

func parseSession(raw string) (sessionRecord, bool) {
	var s sessionRecord
	if strings.HasPrefix(raw, "~") || strings.HasPrefix(raw, "=") {
		s.Settled = raw[0] == '='
		c := strings.IndexByte(raw, ',')
		if c < 0 {
			return s, false
		}
		s.Tomb, s.TombHome = true, raw[1:c]
		raw = raw[c+1:]
	}
	f := strings.SplitN(raw, ",", 6)
	if len(f) != 6 {
		return s, false
	}
	s.Device, s.Status = f[0], f[5]
	num := func(x string, has *bool) int64 {
		if x == "" {
			return 0
		}
		n, err := strconv.ParseInt(x, 10, 64)
		*has = err == nil
		return n
	}
	s.Start = num(f[1], &s.HasStart)
	s.End = num(f[2], &s.HasEnd)
	var hasGD bool
	s.GivenDur = num(f[3], &hasGD)
	if !hasGD {
		s.GivenDur = -1
	}
	s.Written = num(f[4], &s.hasWritten)
	return s, true
}

// String encodes the record (without a tombstone), as the scripts read it.
func (s sessionRecord) String() string {
	opt := func(x int64, has bool) string {
		if !has {
			return ""
		}
		return strconv.FormatInt(x, 10)
	}
	return s.Device + "," + opt(s.Start, s.HasStart) + "," + opt(s.End, s.HasEnd) + "," + opt(s.GivenDur, s.GivenDur >= 0) + "," +
		opt(s.Written, s.hasWritten) + "," + s.Status
}

// at is when the session started: its start, else its end minus durationSec.
func (s sessionRecord) at() int64 {
	if s.HasStart {
		return s.Start
	}
	return s.End - max(s.GivenDur, 0)*1000
}

// join merges what two records know of one session (lib.lua, sjoin): the
// earliest start and the winning end (endAfter).
func (s sessionRecord) join(o sessionRecord) sessionRecord {
	r := s
	r.Tomb, r.TombHome, r.Settled = false, "", false
	if r.Device == "" {
		r.Device = o.Device
	}
	if o.HasStart && (!r.HasStart || o.Start < r.Start) {
		r.Start, r.HasStart = o.Start, true
	}
	if o.HasEnd && (!r.HasEnd || endAfter(o, r)) {
		r.End, r.HasEnd, r.GivenDur, r.Status = o.End, true, o.GivenDur, o.Status
	}
	if o.hasWritten && (!r.hasWritten || o.Written > r.Written) {
		r.Written, r.hasWritten = o.Written, true
	}
	return r
}

// endAfter reports whether end a wins over end b (lib.lua, ecmp): the
// earliest ts, then the greater durationSec, then the greater status.
func endAfter(a, b sessionRecord) bool {
	if a.End != b.End {
		return a.End < b.End
	}
	if a.GivenDur != b.GivenDur {
		return a.GivenDur > b.GivenDur
	}
	return a.Status > b.Status
}
