package redisstore

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// Members of a workspace.

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
