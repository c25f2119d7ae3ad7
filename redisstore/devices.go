package redisstore

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// Devices: listing, reading, unbinding, rotating a secret.

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
