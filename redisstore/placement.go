package redisstore

import (
	"strconv"
	"strings"
)

// historyMax bounds a device's placement history: the newest historyMax
// registrations and deletes are kept (so a device flapping between
// workspaces costs a bounded record). Sessions older than the oldest kept
// placement are homed as if it were the first.
const historyMax = 32

// placement is one registration ("TS+WS") or delete ("TS-") of a device.
// The scripts hold the same codec and rules (lib.lua: hparse, pcmp, hhome).
type placement struct {
	ts  int64
	del bool
	ws  string
}

// String encodes the placement: "TS+WS" or "TS-", TS in base 36 (8
// characters for a time in ms, where decimal takes 13: the index holds one
// per device).
func (p placement) String() string {
	if p.del {
		return strconv.FormatInt(p.ts, 36) + "-"
	}
	return strconv.FormatInt(p.ts, 36) + "+" + p.ws
}

// history is a device's placements in placement order: ts, a delete after
// a registration of the same ts, then workspace ids in byte order.
type history []placement

// parseHistory decodes what the index holds; "" is no history.
func parseHistory(h string) (history, bool) {
	if h == "" {
		return nil, true
	}
	var out history
	for e := range strings.SplitSeq(h, "/") {
		i := strings.IndexAny(e, "+-")
		if i == 0 && len(e) > 0 && e[0] == '-' { // a negative ts
			i = strings.IndexAny(e[1:], "+-")
			if i >= 0 {
				i++
			}
		}
		if i <= 0 {
			return nil, false
		}
		ts, err := strconv.ParseInt(e[:i], 36, 64)
		if err != nil {
			return nil, false
		}
		p := placement{ts: ts, del: e[i] == '-', ws: e[i+1:]}
		if p.del != (p.ws == "") {
			return nil, false
		}
		out = append(out, p)
	}
	return out, true
}

// owner is the device's workspace now ("" when deleted or never placed).
func (h history) owner() string {
	if len(h) == 0 || h[len(h)-1].del {
		return ""
	}
	return h[len(h)-1].ws
}

// home is the device's workspace at time t: that of the greatest placement
// at or before t when it is a registration, else that of the first
// registration after t (the greatest placement of each instant counting);
// "" for none.
func (h history) home(t int64) string {
	i := 0
	for i < len(h) && h[i].ts <= t {
		i++
	}
	if i > 0 && !h[i-1].del {
		return h[i-1].ws
	}
	for k := i; k < len(h); k++ {
		if k+1 < len(h) && h[k+1].ts == h[k].ts {
			continue
		}
		if !h[k].del {
			return h[k].ws
		}
	}
	return ""
}

// workspaces lists the workspaces the history names, each once.
func (h history) workspaces() []string {
	var out []string
	for _, p := range h {
		if !p.del && !containsString(out, p.ws) {
			out = append(out, p.ws)
		}
	}
	return out
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
