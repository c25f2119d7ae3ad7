package api

import (
	"context"
	"encoding/json"
	"net/mail"
	"strings"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// maxEmailLen is the longest address SMTP can carry (RFC 5321 path limit).
const maxEmailLen = 254

// listMembers is GET /api/v1/members, ordered by email.
func (s *Server) listMembers(ctx *fasthttp.RequestCtx, p *principal) error {
	limit, cursor, err := pageParams(ctx.QueryArgs())
	if err != nil {
		return err
	}
	ws := p.workspace
	key := readKey{kind: readMembers, ws: ws, cursor: cursor, limit: limit}
	return readPage(s, ctx, key, appendMember, func(c context.Context) (fleet.Page[fleet.Member], error) {
		return s.cfg.Reader.ListMembers(c, ws, cursor, limit)
	})
}

func appendMember(b []byte, m *fleet.Member) []byte {
	b = append(b, `{"email":`...)
	b = appendString(b, m.Email)
	b = append(b, `,"role":`...)
	b = appendString(b, m.Role)
	b = append(b, `,"status":`...)
	b = appendString(b, m.Status)
	b = append(b, `,"invited_at":`...)
	b = appendTime(b, m.InvitedAt)
	return append(b, '}')
}

// inviteRequest is the body of POST /api/v1/members:invite.
type inviteRequest struct {
	Email string `json:"email"`
	Role  string `json:"role"`
}

// inviteMember is POST /api/v1/members:invite. Emails are stored and shown
// lower-cased, which is how "compared case-insensitively" is kept: the
// store refuses a second member whose address differs only in case.
// invited_at is whole seconds, so the reply equals what the listing shows.
func (s *Server) inviteMember(ctx *fasthttp.RequestCtx, p *principal) error {
	var req inviteRequest
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		return fleet.Errorf(fleet.EINVALID, `body must be a JSON object {"email":"...","role":"owner|admin|member"}`)
	}
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return err
	}
	switch req.Role {
	case fleet.RoleOwner, fleet.RoleAdmin, fleet.RoleMember:
	default:
		return fleet.Errorf(fleet.EINVALID, "role must be owner, admin or member")
	}
	m := fleet.Member{Email: email, Role: req.Role, Status: fleet.MemberInvited, InvitedAt: s.now().UTC().Truncate(time.Second)}
	c, cancel := storeContext()
	err = s.cfg.Reader.AddMember(c, p.workspace, m)
	cancel()
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusCreated, appendMember(make([]byte, 0, 128), &m))
	return nil
}

// normalizeEmail accepts a bare address (no display name, no angle
// brackets) and returns it lower-cased. Quoted local parts are refused:
// they may hold a second '@' or spaces, which no invitation needs and
// which the store's member cursors cannot carry.
func normalizeEmail(s string) (string, error) {
	bad := fleet.Errorf(fleet.EINVALID, "email must be a plain address such as dev@acme.com")
	// Lower-casing can lengthen a string (U+023A → U+2C65): the limit
	// applies to what is stored.
	if len(strings.ToLower(s)) > maxEmailLen {
		return "", bad
	}
	if s == "" || len(s) > maxEmailLen || strings.Count(s, "@") != 1 || strings.ContainsAny(s, "\"<> \t\r\n") {
		return "", bad
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", bad
	}
	at := strings.IndexByte(s, '@')
	if at == 0 || at == len(s)-1 {
		return "", bad
	}
	return strings.ToLower(s), nil
}
