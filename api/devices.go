package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// secretPrefix starts every device secret, so a leaked one is recognisable
// (by people and by secret scanners) and never mistaken for an API key.
const secretPrefix = "ds_"

// secretBytes of randomness make a device secret: 256 bits, base64url
// encoded without padding (43 characters).
const secretBytes = 32

// listDevices is GET /api/v1/devices.
func (s *Server) listDevices(ctx *fasthttp.RequestCtx, p *principal) error {
	args := ctx.QueryArgs()
	limit, cursor, err := pageParams(args)
	if err != nil {
		return err
	}
	var f fleet.DeviceFilter
	// Has, not Peek: fasthttp may answer an empty value with nil or with
	// an empty slice, and "?online=" must be a 400 wherever it stands.
	if args.Has("online") {
		v := args.Peek("online")
		var on bool
		switch string(v) {
		case "true":
			on = true
		case "false":
		default:
			return fleet.Errorf(fleet.EINVALID, "online must be true or false")
		}
		f.Online = &on
	}
	// The store compares os case-insensitively (it lower-cases both sides).
	if f.OS, err = textParam(args, "os"); err != nil {
		return err
	}
	ws := p.workspace
	key := readKey{kind: readDevices, ws: ws, cursor: cursor, os: f.OS, limit: limit, online: onlineFilter(f.Online)}
	return readPage(s, ctx, key, appendListedDevice, func(c context.Context) (fleet.Page[fleet.Device], error) {
		return s.cfg.Reader.ListDevices(c, ws, f, cursor, limit)
	})
}

// appendListedDevice appends a device object of a listing.
func appendListedDevice(b []byte, d *fleet.Device) []byte { return appendDevice(b, d, false) }

// appendDevice appends a device object; full adds the fields of the
// single-device replies (user_id, workspace_id).
func appendDevice(b []byte, d *fleet.Device, full bool) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, d.ID)
	b = append(b, `,"name":`...)
	b = appendString(b, d.Name)
	b = append(b, `,"os":`...)
	b = appendString(b, d.OS)
	b = append(b, `,"online":`...)
	b = appendBool(b, d.Online)
	b = append(b, `,"last_seen":`...)
	b = appendTime(b, d.LastSeen)
	if full {
		b = append(b, `,"user_id":`...)
		if d.UserID == "" {
			b = append(b, "null"...)
		} else {
			b = appendString(b, d.UserID)
		}
		b = append(b, `,"workspace_id":`...)
		b = appendString(b, d.WorkspaceID)
	}
	return append(b, '}')
}

// getDevice is GET /api/v1/devices/{id}.
func (s *Server) getDevice(ctx *fasthttp.RequestCtx, p *principal) error {
	id, err := pathDeviceID(ctx)
	if err != nil {
		return err
	}
	ws := p.workspace
	return s.read(ctx, readKey{kind: readDevice, ws: ws, device: id}, func(b []byte) ([]byte, error) {
		c, cancel := storeContext()
		d, err := s.cfg.Reader.Device(c, ws, id)
		cancel()
		if err != nil {
			return b, err
		}
		return appendDevice(b, &d, true), nil
	})
}

// unbindDevice is POST /api/v1/devices/{id}/unbind.
func (s *Server) unbindDevice(ctx *fasthttp.RequestCtx, p *principal) error {
	id, err := pathDeviceID(ctx)
	if err != nil {
		return err
	}
	c, cancel := storeContext()
	defer cancel()
	d, err := s.cfg.Reader.UnbindDevice(c, p.workspace, id)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, appendDevice(make([]byte, 0, 256), &d, true))
	return nil
}

// rotateSecret is POST /api/v1/devices/{id}/secret:rotate. The secret is
// shown once, here; the store keeps only its SHA-256. rotated_at is taken
// at whole seconds and stored as such, so "an online event with a ts after
// rotated_at" means the same to the client, who sees seconds, and to the
// store, which compares milliseconds.
func (s *Server) rotateSecret(ctx *fasthttp.RequestCtx, p *principal) error {
	id, err := pathDeviceID(ctx)
	if err != nil {
		return err
	}
	var raw [secretBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	secret := secretPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	hash := sha256.Sum256([]byte(secret))
	at := s.now().UTC().Truncate(time.Second)
	c, cancel := storeContext()
	err = s.cfg.Reader.RotateDeviceSecret(c, p.workspace, id, hash[:], at)
	cancel()
	if err != nil {
		return err
	}
	b := make([]byte, 0, 128)
	b = append(b, `{"id":`...)
	b = appendString(b, id)
	b = append(b, `,"secret":`...)
	b = appendString(b, secret)
	b = append(b, `,"rotated_at":`...)
	b = appendTime(b, at)
	b = append(b, '}')
	// A secret must not be kept by a cache or proxy on the way.
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, fasthttp.StatusOK, b)
	return nil
}
