// Package fleet holds fleetd's domain: devices, sessions, usage, members, API
// keys, webhook events, the error type, and the small interfaces between the
// parts of the daemon. It imports only the standard library.
package fleet

import (
	"context"
	"time"
)

// EventType is the kind of a webhook event.
type EventType uint8

// The webhook event types of SPEC §3. EventUnknown stands for any type fleetd
// does not know: such events are acknowledged and counted as ignored.
const (
	EventUnknown EventType = iota
	EventDeviceRegistered
	EventOnlineChanged
	EventDeviceDeleted
	EventSessionStarted
	EventSessionEnded
	// EventSecretRotated is QuickDesk's device.secret.rotated: the device is
	// offline until an online change newer than the rotation. The main
	// webhook does not accept it (ParseEventType never returns it).
	EventSecretRotated
	numEventTypes
)

// NumEventTypes is the number of EventType values, for arrays indexed by type.
const NumEventTypes = int(numEventTypes)

var eventTypeNames = [...]string{"unknown", "device.registered", "device.online.changed", "device.deleted", "session.started", "session.ended", "device.secret.rotated"}

// String returns the wire name of t ("unknown" for EventUnknown).
func (t EventType) String() string {
	if int(t) < len(eventTypeNames) {
		return eventTypeNames[t]
	}
	return "unknown"
}

// ParseEventType returns the EventType of a wire name of the main webhook
// (SPEC §3), EventUnknown if none.
func ParseEventType(b []byte) EventType {
	for i := 1; i <= int(EventSessionEnded); i++ {
		if string(b) == eventTypeNames[i] {
			return EventType(i)
		}
	}
	return EventUnknown
}

// Event is one validated webhook event. Every ID field has passed ValidID,
// so it is safe to use inside a storage key.
type Event struct {
	Type EventType
	// ID is the delivery id used for de-duplication; empty when the sender
	// gave none (such an event is never counted as a duplicate by id).
	ID string
	// TS is when the event happened, in Unix milliseconds.
	TS          int64
	DeviceID    string
	WorkspaceID string // device.registered only
	Name        string // device.registered only
	OS          string // device.registered only
	UserID      string // device.registered only, optional
	SessionID   string // session.* only
	Status      string // session.ended only
	Online      bool   // device.online.changed only
	// DurationSec is session.ended's durationSec; -1 when absent.
	DurationSec int64
}

// Result is what applying one event did.
type Result uint8

// Results of applying an event, as counted in the webhook's 200 body.
const (
	Accepted Result = iota
	Duplicate
	Stale
	Ignored
	Invalid // only for metrics: events of a rejected request
	NumResults
)

var resultNames = [...]string{"accepted", "duplicate", "stale", "ignored", "invalid"}

// String returns the metric label of r.
func (r Result) String() string { return resultNames[r] }

// Ingester applies webhook events to the fleet state.
type Ingester interface {
	// Apply applies events in order, each atomically, and writes the outcome
	// of events[i] to results[i]. It returns only after every effect is
	// acknowledged by the store. On error (EUNAVAILABLE when the store cannot
	// be reached in time) some events may have been applied: redelivery is
	// safe because every event is idempotent. Safe for concurrent use.
	Apply(ctx context.Context, events []Event, results []Result) error
}

// ValidID reports whether s may be used as an id: 1–128 characters of
// [A-Za-z0-9._:@-]. Ids that pass can be embedded in storage keys.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '@' || c == '-') {
			return false
		}
	}
	return true
}

// Device is a registered device as the REST API shows it.
type Device struct {
	ID          string
	WorkspaceID string
	Name        string
	OS          string
	UserID      string // "" when unbound
	Online      bool
	LastSeen    time.Time
}

// Session is one remote session, live or ended.
type Session struct {
	ID       string
	DeviceID string
	// Status is "live" for a live session, "abandoned" for a live session
	// whose end never arrived within the live-session bound, else the
	// status of its session.ended event.
	Status      string
	DurationSec int64
	// At is when the session started (its end minus its duration when the
	// start is unknown).
	At time.Time
}

// Session statuses that fleetd itself assigns.
const (
	StatusLive      = "live"
	StatusAbandoned = "abandoned"
)

// Usage is metered usage of a workspace over [From, To).
type Usage struct {
	From, To       time.Time
	SessionSeconds int64
	ActiveDevices  int64
	Devices        int64
}

// SessionMinutes is floor(SessionSeconds / 60).
func (u Usage) SessionMinutes() int64 { return u.SessionSeconds / 60 }

// Member roles and statuses.
const (
	RoleOwner       = "owner"
	RoleAdmin       = "admin"
	RoleMember      = "member"
	MemberInvited   = "invited"
	MemberActive    = "active"
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// Member is a person in a workspace.
type Member struct {
	Email     string
	Role      string
	Status    string
	InvitedAt time.Time
}

// APIKey is the stored description of an API key; the key itself is never
// stored, only its hash.
type APIKey struct {
	ID         string
	Name       string
	Workspace  string
	ReadOnly   bool
	CreatedAt  time.Time
	LastUsedAt time.Time // zero when never used
	Revoked    bool
}

// DeviceFilter narrows a device listing. Nil/empty fields match everything.
type DeviceFilter struct {
	Online *bool
	OS     string
}

// SessionFilter narrows a session listing.
type SessionFilter struct {
	DeviceID string
	Status   string
}

// Page is one page of a listing: Next is "" when the listing is exhausted.
// Cursors are opaque to callers and stable under concurrent inserts.
type Page[T any] struct {
	Items []T
	Next  string
}

// Reader serves the workspace-scoped reads and writes of the REST API. Every
// method is safe for concurrent use. A resource of another workspace is
// ENOTFOUND, exactly like one that does not exist. A malformed cursor is
// EINVALID. A store that cannot be reached in time is EUNAVAILABLE.
type Reader interface {
	ListDevices(ctx context.Context, ws string, f DeviceFilter, cursor string, limit int) (Page[Device], error)
	Device(ctx context.Context, ws, id string) (Device, error)
	// UnbindDevice clears the device's user and returns the device.
	UnbindDevice(ctx context.Context, ws, id string) (Device, error)
	// RotateDeviceSecret stores secretHash as the device's secret and marks
	// the device offline until an online event newer than at.
	RotateDeviceSecret(ctx context.Context, ws, id string, secretHash []byte, at time.Time) error
	// ListSessions lists sessions newest At first, live ones included.
	ListSessions(ctx context.Context, ws string, f SessionFilter, cursor string, limit int) (Page[Session], error)
	Usage(ctx context.Context, ws string, from, to time.Time) (Usage, error)
	ListMembers(ctx context.Context, ws string, cursor string, limit int) (Page[Member], error)
	// AddMember adds m; ECONFLICT when the email is already a member.
	AddMember(ctx context.Context, ws string, m Member) error
}

// KeyStore keeps API keys by the hash of the key. Safe for concurrent use.
type KeyStore interface {
	// CreateKey stores k under keyHash.
	CreateKey(ctx context.Context, keyHash []byte, k APIKey) error
	// KeyByHash returns the key stored under keyHash; ENOTFOUND if none.
	KeyByHash(ctx context.Context, keyHash []byte) (APIKey, error)
	// ListKeys lists the keys of a workspace, oldest first.
	ListKeys(ctx context.Context, ws string) ([]APIKey, error)
	// RevokeKey revokes by key id or by key hash; ENOTFOUND if neither.
	RevokeKey(ctx context.Context, id string, keyHash []byte) (APIKey, error)
	// TouchKey records that the key was used at t.
	TouchKey(ctx context.Context, id string, t time.Time) error
}

// WorkspaceStats is the fleet state of one workspace, as exported to
// Prometheus.
type WorkspaceStats struct {
	Workspace      string
	Devices        int64
	Online         int64
	LiveSessions   int64
	SessionSeconds int64
	// Ended counts ended sessions by status.
	Ended map[string]int64
}

// StatsReader reads the fleet state of known workspaces, in the order in
// which they became known: a workspace keeps its place, so the first N are
// the same N on every read and every replica. Safe for concurrent use.
type StatsReader interface {
	// StatsRange reads the state of up to count workspaces (all, when count
	// is negative) from the offset-th, and says how many are known.
	StatsRange(ctx context.Context, offset, count int) (stats []WorkspaceStats, known int, err error)
}

// StatusLabels are the status values that metrics count ended sessions by:
// the statuses senders use (QuickDesk's success, failed and timeout, plus
// cancelled and error), then StatusOther for any other. A session keeps
// the status as sent; only counts are folded, so that free text from
// senders cannot grow the counts without bound.
var StatusLabels = [...]string{"success", "failed", "timeout", "cancelled", "error", StatusOther}

// StatusOther is the label of ended sessions with a status outside
// StatusLabels.
const StatusOther = "other"

// StatusLabel folds a session.ended status into one of StatusLabels.
func StatusLabel(status string) string {
	for _, l := range StatusLabels[:len(StatusLabels)-1] {
		if status == l {
			return l
		}
	}
	return StatusOther
}
