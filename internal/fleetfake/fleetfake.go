// Package fleetfake is an in-memory fleet store for the tests of what sits
// above the store (api's handlers, the wiring): it implements
// fleet.Ingester, fleet.Reader and fleet.KeyStore, so those tests run
// without Redis.
//
// The state it serves is that of internal/model, the reference model of
// the webhook semantics, run over every event applied so far: a test on
// the fake sees what the spec says, not a second implementation of the
// store. What it does not model is Redis's: the per-request results are
// accepted, duplicate (by delivery id) and ignored, never stale; cursors
// are its own; nothing expires; it is never unreachable. Tests of those
// run against a real Redis (internal/redistest).
package fleetfake

import (
	"cmp"
	"context"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/model"
)

// DefaultLiveBound is how long a session without an end stays live,
// unless Store.LiveBound says otherwise (redisstore's default).
const DefaultLiveBound = 24 * time.Hour

// Store is the fake. The zero value is not usable; call New. Safe for
// concurrent use.
type Store struct {
	mu      sync.Mutex
	now     func() time.Time
	live    time.Duration
	events  []fleet.Event
	seen    map[string]bool // delivery ids applied
	unbound map[string]int  // device → len(events) when it was unbound
	keys    map[string]*key // by hex of the key hash
	members map[string]map[string]fleet.Member
}

type key struct {
	hash string
	k    fleet.APIKey
}

// New returns an empty store on the real clock.
func New() *Store {
	return &Store{
		now: time.Now, live: DefaultLiveBound,
		seen: map[string]bool{}, unbound: map[string]int{},
		keys: map[string]*key{}, members: map[string]map[string]fleet.Member{},
	}
}

// SetClock replaces the clock (time.Now), as redisstore's SetClock does.
func (s *Store) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

// Ping reports the store reachable: it always is.
func (s *Store) Ping(context.Context) error { return nil }

// Apply implements fleet.Ingester. An event whose delivery id was applied
// before is a duplicate; an event of an unknown type is ignored; every
// other one is accepted and takes part in the state.
func (s *Store) Apply(_ context.Context, events []fleet.Event, results []fleet.Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	nowMs := s.now().UnixMilli()
	for i, e := range events {
		switch {
		case e.Type == fleet.EventUnknown:
			results[i] = fleet.Ignored
			continue
		case e.ID != "" && s.seen[e.ID]:
			results[i] = fleet.Duplicate
			continue
		}
		if e.ID != "" {
			s.seen[e.ID] = true
		}
		if e.TS == 0 {
			e.TS = nowMs
		}
		s.events = append(s.events, e)
		results[i] = fleet.Accepted
	}
	return nil
}

// state runs the model over the events; callers hold s.mu.
func (s *Store) state() model.State {
	return model.Run(s.events, s.now().UnixMilli(), model.Config{LiveBound: s.live})
}

// device returns the device id of ws as the REST API shows it; callers
// hold s.mu.
func (s *Store) device(st *model.State, ws, id string) (fleet.Device, bool) {
	d, ok := st.Devices[id]
	if !ok || d.Workspace != ws {
		return fleet.Device{}, false
	}
	fd := fleet.Device{ID: d.ID, WorkspaceID: d.Workspace, Name: d.Name, OS: d.OS, UserID: d.UserID, Online: d.Online, LastSeen: time.UnixMilli(d.LastSeen).UTC()}
	if at, ok := s.unbound[id]; ok && !s.registeredSince(id, at) {
		fd.UserID = ""
	}
	return fd, true
}

// registeredSince reports whether id was registered by an event applied
// after the first n; callers hold s.mu.
func (s *Store) registeredSince(id string, n int) bool {
	for _, e := range s.events[n:] {
		if e.Type == fleet.EventDeviceRegistered && e.DeviceID == id {
			return true
		}
	}
	return false
}

func errNotFound(id string) error { return fleet.Errorf(fleet.ENOTFOUND, "device %q not found", id) }

var errCursor = fleet.Errorf(fleet.EINVALID, "cursor is malformed: pass next_cursor of the previous page unchanged")

// The fake's cursors are the hex of the last item's sort key (a session's
// is its at, "/", its id): its own format, which only it reads.
func encodeCursor(key string) string { return hex.EncodeToString([]byte(key)) }

func decodeCursor(c string) (string, error) {
	b, err := hex.DecodeString(c)
	if err != nil {
		return "", errCursor
	}
	return string(b), nil
}

// page cuts items (sorted, all after the cursor) to limit and names the
// cursor of the next page with last.
func page[T any](items []T, limit int, last func(T) string) fleet.Page[T] {
	if len(items) <= limit {
		return fleet.Page[T]{Items: items}
	}
	return fleet.Page[T]{Items: items[:limit], Next: last(items[limit-1])}
}

// ListDevices implements fleet.Reader: by id, the os filter compared
// without regard to ASCII case.
func (s *Store) ListDevices(_ context.Context, ws string, f fleet.DeviceFilter, cursor string, limit int) (fleet.Page[fleet.Device], error) {
	after, err := decodeCursor(cursor)
	if err != nil {
		return fleet.Page[fleet.Device]{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state()
	var items []fleet.Device
	for id := range st.Devices {
		d, ok := s.device(&st, ws, id)
		if !ok || cursor != "" && id <= after ||
			f.Online != nil && d.Online != *f.Online ||
			f.OS != "" && !strings.EqualFold(d.OS, f.OS) {
			continue
		}
		items = append(items, d)
	}
	slices.SortFunc(items, func(a, b fleet.Device) int { return cmp.Compare(a.ID, b.ID) })
	return page(items, limit, func(d fleet.Device) string { return encodeCursor(d.ID) }), nil
}

// Device implements fleet.Reader.
func (s *Store) Device(_ context.Context, ws, id string) (fleet.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state()
	d, ok := s.device(&st, ws, id)
	if !ok {
		return fleet.Device{}, errNotFound(id)
	}
	return d, nil
}

// UnbindDevice implements fleet.Reader: the user stays cleared until the
// device registers again.
func (s *Store) UnbindDevice(_ context.Context, ws, id string) (fleet.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state()
	if _, ok := s.device(&st, ws, id); !ok {
		return fleet.Device{}, errNotFound(id)
	}
	s.unbound[id] = len(s.events)
	d, _ := s.device(&st, ws, id)
	return d, nil
}

// RotateDeviceSecret implements fleet.Reader: the rotation is an offline
// change at at, as the model has it.
// The fake checks no device secrets, so it keeps no hash.
func (s *Store) RotateDeviceSecret(_ context.Context, ws, id string, _ []byte, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state()
	if _, ok := s.device(&st, ws, id); !ok {
		return errNotFound(id)
	}
	s.events = append(s.events, fleet.Event{Type: fleet.EventSecretRotated, DeviceID: id, TS: at.UnixMilli(), DurationSec: -1})
	return nil
}

// ListSessions implements fleet.Reader: newest At first, then by id.
func (s *Store) ListSessions(_ context.Context, ws string, f fleet.SessionFilter, cursor string, limit int) (fleet.Page[fleet.Session], error) {
	key, err := decodeCursor(cursor)
	if err != nil {
		return fleet.Page[fleet.Session]{}, err
	}
	var afterAt int64
	at, afterID, _ := strings.Cut(key, "/")
	if cursor != "" {
		if afterAt, err = strconv.ParseInt(at, 10, 64); err != nil {
			return fleet.Page[fleet.Session]{}, errCursor
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state()
	var items []fleet.Session
	for _, x := range st.Sessions {
		if x.Workspace != ws || f.DeviceID != "" && x.Device != f.DeviceID || f.Status != "" && x.Status != f.Status {
			continue
		}
		if cursor != "" && (x.At > afterAt || x.At == afterAt && x.ID <= afterID) {
			continue
		}
		items = append(items, fleet.Session{ID: x.ID, DeviceID: x.Device, Status: x.Status, DurationSec: x.DurationSec, At: time.UnixMilli(x.At).UTC()})
	}
	slices.SortFunc(items, func(a, b fleet.Session) int {
		return cmp.Or(b.At.Compare(a.At), cmp.Compare(a.ID, b.ID))
	})
	return page(items, limit, func(x fleet.Session) string {
		return encodeCursor(strconv.FormatInt(x.At.UnixMilli(), 10) + "/" + x.ID)
	}), nil
}

// Usage implements fleet.Reader.
func (s *Store) Usage(_ context.Context, ws string, from, to time.Time) (fleet.Usage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state()
	return st.Usage(ws, from.UnixMilli(), to.UnixMilli()), nil
}

// ListMembers implements fleet.Reader: by email.
func (s *Store) ListMembers(_ context.Context, ws string, cursor string, limit int) (fleet.Page[fleet.Member], error) {
	after, err := decodeCursor(cursor)
	if err != nil {
		return fleet.Page[fleet.Member]{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var items []fleet.Member
	for email, m := range s.members[ws] {
		if cursor == "" || email > after {
			items = append(items, m)
		}
	}
	slices.SortFunc(items, func(a, b fleet.Member) int { return cmp.Compare(a.Email, b.Email) })
	return page(items, limit, func(m fleet.Member) string { return encodeCursor(m.Email) }), nil
}

// AddMember implements fleet.Reader.
func (s *Store) AddMember(_ context.Context, ws string, m fleet.Member) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.members[ws][m.Email]; ok {
		return fleet.Errorf(fleet.ECONFLICT, "%s is already a member", m.Email)
	}
	if s.members[ws] == nil {
		s.members[ws] = map[string]fleet.Member{}
	}
	s.members[ws][m.Email] = m
	return nil
}

// CreateKey implements fleet.KeyStore.
func (s *Store) CreateKey(_ context.Context, keyHash []byte, k fleet.APIKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := hex.EncodeToString(keyHash)
	if _, ok := s.keys[h]; ok {
		return fleet.Errorf(fleet.ECONFLICT, "key exists")
	}
	s.keys[h] = &key{hash: h, k: k}
	return nil
}

// KeyByHash implements fleet.KeyStore.
func (s *Store) KeyByHash(_ context.Context, keyHash []byte) (fleet.APIKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[hex.EncodeToString(keyHash)]; ok {
		return k.k, nil
	}
	return fleet.APIKey{}, fleet.Errorf(fleet.ENOTFOUND, "no such API key")
}

// ListKeys implements fleet.KeyStore.
func (s *Store) ListKeys(_ context.Context, ws string) ([]fleet.APIKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []fleet.APIKey
	for _, k := range s.keys {
		if k.k.Workspace == ws {
			out = append(out, k.k)
		}
	}
	slices.SortFunc(out, func(a, b fleet.APIKey) int { return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

// RevokeKey implements fleet.KeyStore.
func (s *Store) RevokeKey(_ context.Context, id string, keyHash []byte) (fleet.APIKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := hex.EncodeToString(keyHash)
	for _, k := range s.keys {
		if id != "" && k.k.ID == id || len(keyHash) > 0 && k.hash == h {
			k.k.Revoked = true
			return k.k, nil
		}
	}
	return fleet.APIKey{}, fleet.Errorf(fleet.ENOTFOUND, "no such API key")
}

// TouchKey implements fleet.KeyStore.
func (s *Store) TouchKey(_ context.Context, id string, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys {
		if k.k.ID == id {
			k.k.LastUsedAt = t
			return nil
		}
	}
	return fleet.Errorf(fleet.ENOTFOUND, "no such API key")
}
