package redisstore

import (
	"context"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// CreateKey implements fleet.KeyStore. The record goes first, then the id
// index and the workspace listing: a crash in between leaves a working key
// that is missing from listings, never a listed key that does not work.
func (s *Store) CreateKey(ctx context.Context, keyHash []byte, k fleet.APIKey) error {
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.Timeout)
	defer cancel()
	ctx = withOp(ctx, "create_key")
	h := hex.EncodeToString(keyHash)
	ro := "0"
	if k.ReadOnly {
		ro = "1"
	}
	if err := s.rdb.HSet(ctx, apiKeyKey(h), "id", k.ID, "ws", k.Workspace, "name", k.Name, "ro", ro,
		"c", k.CreatedAt.UnixMilli(), "u", 0, "rv", 0).Err(); err != nil {
		return wrap("create key", err)
	}
	pipe := s.rdb.Pipeline()
	pipe.Set(ctx, apiKeyIDKey(k.ID), h, 0)
	pipe.ZAdd(ctx, wsKey(k.Workspace, kKeys), redis.Z{Score: float64(k.CreatedAt.UnixMilli()), Member: k.ID})
	pipe.ZAddNX(ctx, keyWorkspaces, redis.Z{Score: float64(s.now().UnixMilli()), Member: k.Workspace})
	_, err := pipe.Exec(ctx)
	return wrap("create key", err)
}

func keyFromHash(m map[string]string) fleet.APIKey {
	c, _ := strconv.ParseInt(m["c"], 10, 64)
	u, _ := strconv.ParseInt(m["u"], 10, 64)
	k := fleet.APIKey{ID: m["id"], Name: m["name"], Workspace: m["ws"], ReadOnly: m["ro"] == "1",
		CreatedAt: time.UnixMilli(c).UTC(), Revoked: m["rv"] == "1"}
	if u > 0 {
		k.LastUsedAt = time.UnixMilli(u).UTC()
	}
	return k
}

// KeyByHash implements fleet.KeyStore.
func (s *Store) KeyByHash(ctx context.Context, keyHash []byte) (fleet.APIKey, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ctx = withOp(ctx, "key")
	m, err := s.rdb.HGetAll(ctx, apiKeyKey(hex.EncodeToString(keyHash))).Result()
	if err != nil {
		return fleet.APIKey{}, wrap("key", err)
	}
	if len(m) == 0 {
		return fleet.APIKey{}, fleet.Errorf(fleet.ENOTFOUND, "no such API key")
	}
	return keyFromHash(m), nil
}

// ListKeys implements fleet.KeyStore.
func (s *Store) ListKeys(ctx context.Context, ws string) ([]fleet.APIKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.Timeout)
	defer cancel()
	ctx = withOp(ctx, "list_keys")
	ids, err := s.rdb.ZRange(ctx, wsKey(ws, kKeys), 0, -1).Result()
	if err != nil {
		return nil, wrap("list keys", err)
	}
	pipe := s.rdb.Pipeline()
	hs := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		hs[i] = pipe.Get(ctx, apiKeyIDKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, wrap("list keys", err)
	}
	pipe = s.rdb.Pipeline()
	ms := make([]*redis.MapStringStringCmd, len(ids))
	for i := range ids {
		ms[i] = pipe.HGetAll(ctx, apiKeyKey(hs[i].Val()))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("list keys", err)
	}
	out := make([]fleet.APIKey, 0, len(ids))
	for _, m := range ms {
		if len(m.Val()) > 0 {
			out = append(out, keyFromHash(m.Val()))
		}
	}
	return out, nil
}

// RevokeKey implements fleet.KeyStore.
func (s *Store) RevokeKey(ctx context.Context, id string, keyHash []byte) (fleet.APIKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.Timeout)
	defer cancel()
	ctx = withOp(ctx, "revoke_key")
	h := hex.EncodeToString(keyHash)
	if id != "" {
		var err error
		h, err = s.rdb.Get(ctx, apiKeyIDKey(id)).Result()
		if err == redis.Nil {
			return fleet.APIKey{}, fleet.Errorf(fleet.ENOTFOUND, "no API key with id %q", id)
		} else if err != nil {
			return fleet.APIKey{}, wrap("revoke key", err)
		}
	}
	n, err := s.rdb.Exists(ctx, apiKeyKey(h)).Result()
	if err != nil {
		return fleet.APIKey{}, wrap("revoke key", err)
	} else if n == 0 {
		return fleet.APIKey{}, fleet.Errorf(fleet.ENOTFOUND, "no such API key")
	}
	if err := s.rdb.HSet(ctx, apiKeyKey(h), "rv", 1).Err(); err != nil {
		return fleet.APIKey{}, wrap("revoke key", err)
	}
	m, err := s.rdb.HGetAll(ctx, apiKeyKey(h)).Result()
	if err != nil {
		return fleet.APIKey{}, wrap("revoke key", err)
	}
	return keyFromHash(m), nil
}

// TouchKey implements fleet.KeyStore.
func (s *Store) TouchKey(ctx context.Context, id string, t time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ctx = withOp(ctx, "touch_key")
	h, err := s.rdb.Get(ctx, apiKeyIDKey(id)).Result()
	if err == redis.Nil {
		return fleet.Errorf(fleet.ENOTFOUND, "no API key with id %q", id)
	} else if err != nil {
		return wrap("touch key", err)
	}
	return wrap("touch key", s.rdb.HSet(ctx, apiKeyKey(h), "u", t.UnixMilli()).Err())
}
