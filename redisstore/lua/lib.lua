-- lib.lua: the codecs and rules every script shares. The prelude that Go
-- puts before it (prelude.go) defines the constants: result codes (R_*),
-- event types (T_*), STATUS_LABELS, HISTORY_MAX, DAY_MS, DEDUPE_TTL.
-- Lua's `<` on strings follows the server's locale (Redis calls
-- setlocale), so ids are ordered by bytecmp, never by `<`.

-- Globals read once per call into locals: a global lookup costs two
-- table reads a use. They are set as each script starts (scriptStart in
-- scripts.go), since globals cannot be read while the Functions library
-- loads.
local rcall, tonumber, floor, find, sub, byte, format, gmatch, match

local function fmt(x) return format('%d', x) end

-- Text that recurs, kept: the text of small numbers (days, bucket
-- numbers: formatting costs a printf) and the key names of a workspace.
-- It lives as long as the code does (the calls of the Functions library
-- share it; a script run by EVALSHA has it for one call), and starts
-- afresh past 4096 entries.
local NUM, nnum, WSK, nwsk = {}, 0, {}, 0
local function num(n)
  local s = NUM[n]
  if s then return s end
  if nnum >= 4096 then NUM, nnum = {}, 0 end
  s = format('%d', n)
  NUM[n], nnum = s, nnum + 1
  return s
end

-- HEND holds the tot field of each status label, made once.
local HEND = {}

-- wsk returns the key names of workspace prefix P (hsl: of hs:LABEL by
-- label, made when first used; actday, actk: of act:DAY, the last day
-- named).
local function wsk(P)
  local k = WSK[P]
  if k then return k end
  if nwsk >= 4096 then WSK, nwsk = {}, 0 end
  k = {dev = P .. K_DEV, devs = P .. K_DEVS, on = P .. K_ON, ss = P .. K_SS, hist = P .. K_HIST, hd = P .. K_HD,
    live = P .. K_LIVE, ends = P .. K_ENDS, hs = P .. K_HS, secd = P .. K_SECD, act = P .. K_ACT, tot = P .. K_TOT,
    mv = P .. K_MV, sn = P .. K_SN, snday = P .. K_SNDAY, hsl = {}}
  WSK[P], nwsk = k, nwsk + 1
  return k
end

local function opt(s)
  if s == nil or s == '' then return nil end
  return tonumber(s)
end

local function optfmt(x)
  if x == nil then return '' end
  return fmt(x)
end

-- bytecmp orders two strings by their bytes: -1, 0 or 1.
local function bytecmp(a, b)
  if a == b then return 0 end
  for i = 1, math.min(#a, #b) do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  if #a < #b then return -1 end
  return 1
end

local function ncmp(a, b)
  if a == b then return 0 end
  if a < b then return -1 end
  return 1
end

-- wsOf returns the workspace id of a key prefix "fl:{w:W}:".
local function wsOf(P) return sub(P, 7, -3) end

-- Device records and placement histories keep their times in base 36 (8
-- characters for a time in ms, where decimal takes 13), so that a record
-- stays within the 64 bytes of a Redis listpack value, a workspace's
-- records a compact hash, and the index small.
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

local function b36n(s)
  if s == '' then return nil end
  local n = tonumber(s, 36)
  -- tonumber reads "-x" as the unsigned negation of x, far past any time
  if n and n > 1e15 then return -tonumber(sub(s, 2), 36) end
  return n
end

local function b36s(n)
  if n == nil then return '' end
  local neg = n < 0
  if neg then n = -n end
  local t = ''
  repeat
    local d = n % 36
    t = sub(B36, d + 1, d + 1) .. t
    n = (n - d) / 36
  until n == 0
  if neg then return '-' .. t end
  return t
end

-- nstr36 is nstr for the base 36 text of a device record.
local function nstr36(n, n0, s0)
  if n == nil then return '' end
  if n == n0 then return s0 end
  return b36s(n)
end

---------------------------------------------------------------------------
-- Placement history: a device's registrations ("TS+WS") and deletes
-- ("TS-"), TS in base 36, '/'-joined in placement order, the newest HISTORY_MAX kept. It
-- only grows (a set union), so copies merge in any order.

local function hentry(ts, del, ws)
  if del then return {ts = ts, del = true, ws = '', raw = b36s(ts) .. '-'} end
  return {ts = ts, del = false, ws = ws, raw = b36s(ts) .. '+' .. ws}
end

local function hparse(h)
  local out = {}
  for ts, k, ws in gmatch(h, '(%-?[0-9a-z]+)([%+%-])([^/]*)') do
    out[#out + 1] = {ts = b36n(ts), del = (k == '-'), ws = ws, raw = ts .. k .. ws}
  end
  return out
end

-- pcmp is the placement order: ts, then a delete after a registration,
-- then the workspace id.
local function pcmp(a, b)
  if a.ts ~= b.ts then return ncmp(a.ts, b.ts) end
  if a.del ~= b.del then
    if a.del then return 1 end
    return -1
  end
  return bytecmp(a.ws, b.ws)
end

local function hunion(a, b)
  local out, i, j = {}, 1, 1
  while i <= #a or j <= #b do
    local x, y = a[i], b[j]
    if not y then
      out[#out + 1] = x; i = i + 1
    elseif not x then
      out[#out + 1] = y; j = j + 1
    else
      local c = pcmp(x, y)
      if c < 0 then
        out[#out + 1] = x; i = i + 1
      elseif c > 0 then
        out[#out + 1] = y; j = j + 1
      else
        out[#out + 1] = x; i = i + 1; j = j + 1
      end
    end
  end
  if #out > HISTORY_MAX then
    local kept = {}
    for k = #out - HISTORY_MAX + 1, #out do kept[#kept + 1] = out[k] end
    out = kept
  end
  return out
end

local function hstr(l)
  local parts = {}
  for k, e in ipairs(l) do parts[k] = e.raw end
  return table.concat(parts, '/')
end

local function hsame(a, b)
  if #a ~= #b then return false end
  for k = 1, #a do
    if a[k].raw ~= b[k].raw then return false end
  end
  return true
end

-- howner is the device's workspace now: the greatest placement's, when it
-- is a registration.
local function howner(l)
  local top = l[#l]
  if top and not top.del then return top.ws end
  return nil
end

-- hhome is the device's workspace at time t: the greatest placement at or
-- before t when it is a registration, else the first registration after t
-- (counting only the greatest placement of each instant); nil for none.
local function hhome(l, t)
  local i = 0
  for k = 1, #l do
    if l[k].ts <= t then i = k else break end
  end
  if i > 0 and not l[i].del then return l[i].ws end
  for k = i + 1, #l do
    local nx = l[k + 1]
    if not (nx and nx.ts == l[k].ts) and not l[k].del then return l[k].ws end
  end
  return nil
end

-- hsegs cuts time into segments [lo, hi) with one home each (lo nil for
-- -inf, hi nil for +inf, ws nil for none).
local function hsegs(l)
  local eff = {} -- the greatest placement of each instant
  for k = 1, #l do
    local nx = l[k + 1]
    if not (nx and nx.ts == l[k].ts) then eff[#eff + 1] = l[k] end
  end
  local segs = {}
  local function nextReg(from)
    for k = from, #eff do
      if not eff[k].del then return eff[k].ws end
    end
    return nil
  end
  if #eff == 0 then return {{lo = nil, hi = nil, ws = nil}} end
  segs[1] = {lo = nil, hi = eff[1].ts, ws = nextReg(1)}
  for k = 1, #eff do
    local ws
    if eff[k].del then ws = nextReg(k + 1) else ws = eff[k].ws end
    local hi = nil
    if eff[k + 1] then hi = eff[k + 1].ts end
    segs[#segs + 1] = {lo = eff[k].ts, hi = hi, ws = ws}
  end
  return segs
end

---------------------------------------------------------------------------
-- Device record, fl:{w:W}:dev field D: "ON,OT,LS,RG,H;COLD"
--   (times in base 36: b36n, b36s)
--   ON   1 online, 0 offline; OT the ts of the presence that decided it
--        ("" when none yet); LS last seen, "" when it equals OT or,
--        without OT, RG (most devices); RG the ts of the registration
--        whose name/os/user COLD holds ("" when none arrived here);
--   H    the placement history, "" when it is only RG's registration here
--        (the common case: a device that never moved);
--   COLD JSON {n,o,u} of name, os, user, written by Go; "x":1 marks a
--        user unbound through the API (u stays for the tie-break).

-- The codecs split a record with one string.match (every call of a C
-- function costs about as much as the pattern: several finds and subs
-- cost more) and keep the text of each number as it was read, so that
-- writing a record back formats only the numbers that changed (nstr).

-- nstr is the text of number n: s0 when n is still n0, the number it was
-- read as from s0; "" for none.
local function nstr(n, n0, s0)
  if n == nil then return '' end
  if n == n0 then return s0 end
  return fmt(n)
end

local ONS = {[0] = '0', [1] = '1'}

-- drg returns the record's registration ts (nil for none).
local function drg(v)
  if not v._rgread then
    v.rg, v._rgread = b36n(v._rg or ''), true
    v._rgn = v.rg
  end
  return v.rg
end

-- A record leaves LS out (empty) when it equals OT or, without OT, RG:
-- most devices' newest event is their presence change or, before any,
-- their registration. Deciding by OT first keeps RG unread on the hot path.

local function dget(raw)
  local a = find(raw, ',', 3, true)
  local b = find(raw, ',', a + 1, true)
  local c = find(raw, ',', b + 1, true)
  local p = find(raw, ';', c + 1, true)
  local ots, lss = sub(raw, 3, a - 1), sub(raw, a + 1, b - 1)
  local ot, ls = b36n(ots), b36n(lss)
  -- RG is read when asked for (drg): the hot path needs it only for a
  -- device's first presence change.
  local v = {on = byte(raw, 1) - 48, ot = ot, ls = ls, h = sub(raw, c + 1, p - 1),
    cold = sub(raw, p + 1), _ot = ots, _otn = ot, _ls = lss, _lsn = ls, _rg = sub(raw, b + 1, c - 1)}
  if lss == '' then
    if ot ~= nil then v.ls = ot else v.ls = drg(v) end
  end
  return v
end

local function dput(v)
  local rg = v._rg or ''
  if v._rgread then rg = nstr36(v.rg, v._rgn, v._rg) end
  local ls = ''
  if v.ls ~= v.ot and (v.ot ~= nil or v.ls ~= drg(v)) then ls = nstr36(v.ls, v._lsn, v._ls) end
  return ONS[v.on] .. ',' .. nstr36(v.ot, v._otn, v._ot) .. ',' .. ls .. ',' ..
    rg .. ',' .. v.h .. ';' .. v.cold
end

-- Presence order: ts, an offline change winning a tie. pcmpOn returns 1
-- when presence (ts, on) beats presence (ot, on0) (ot nil: none yet), 0
-- when it is the same, -1 when older.
local function pcmpOn(ot, on0, ts, on)
  if ot == nil or ts > ot then return 1 end
  if ts < ot then return -1 end
  if on == on0 then return 0 end
  if on == 0 then return 1 end
  return -1
end

-- The hot path reads the record of a device that never moved (H empty)
-- without a table: match(raw, DPAT) returns the texts of ON, OT and LS,
-- the position after LS, and the texts of RG and H.
local DPAT = '^([01]),([^,]*),([^,]*)(),([^,]*),([^;]*);'

-- dseen returns the last seen of a record's fields (DPAT).
local function dseen(ots, lss, rgs)
  if lss ~= '' then return b36n(lss) end
  if ots ~= '' then return b36n(ots) end
  return b36n(rgs)
end

-- drec is a record of fields ons, ots, lss and the rest of raw from q on
-- (DPAT).
local function drec(raw, ons, ots, lss, q)
  return ons .. ',' .. ots .. ',' .. lss .. sub(raw, q)
end

-- dseenat returns record raw of fields ons, ots, lss, q, rgs (DPAT) with
-- its last seen raised to t (t36 its base 36 text), or nil when it is as
-- late already.
local function dseenat(raw, ons, ots, lss, q, rgs, t, t36)
  local ls = dseen(ots, lss, rgs)
  if ls ~= nil and t <= ls then return nil end
  if ots == t36 then return drec(raw, ons, ots, '', q) end -- LS stays out when it equals OT
  return drec(raw, ons, ots, t36, q)
end

-- dpresence applies presence on (0 or 1) at t (t36 its base 36 text) to
-- record raw of fields ons, ots, lss, q, rgs (DPAT), as pnewer and lsmax
-- do. Returns the result, the new record (nil: unchanged) and whether
-- the device's online flag flipped.
local function dpresence(raw, ons, ots, lss, q, rgs, on, t, t36)
  local ot = b36n(ots)
  local ls = dseen(ots, lss, rgs)
  local on0 = 0
  if ons == '1' then on0 = 1 end
  local c = pcmpOn(ot, on0, t, on)
  local r, win = R_ACCEPTED, c > 0
  if c < 0 then r = R_STALE end
  local raise = ls == nil or t > ls
  if not (win or raise) then return r, nil, false end
  local ons2, ots2, ot2 = ons, ots, ot
  if win then ons2, ots2, ot2 = ONS[on], t36, t end
  local ls2, lss2 = ls, '' -- LS stays out when it equals OT
  if raise then ls2 = t end
  if ls2 ~= ot2 then
    if raise then
      lss2 = t36
    elseif lss ~= '' then
      lss2 = lss
    elseif ots ~= '' then
      lss2 = ots -- last seen was the old presence's ts
    else
      lss2 = rgs
    end
  end
  return r, drec(raw, ons2, ots2, lss2, q), win and on ~= on0
end

-- dhist returns the placement history a record holds.
local function dhist(v, ws)
  if v.h == '' then
    if drg(v) then return {hentry(v.rg, false, ws)} end
    return {}
  end
  return hparse(v.h)
end

-- dsethist stores history l in record v of workspace ws.
local function dsethist(v, l, ws)
  if #l == 1 and not l[1].del and l[1].ws == ws and l[1].ts == drg(v) then
    v.h = ''
  else
    v.h = hstr(l)
  end
end

-- pnewer is the presence order of a record v: pcmpOn of its presence.
local function pnewer(v, ts, on) return pcmpOn(v.ot, v.on, ts, on) end

-- lsmax raises last seen to ts (whose base 36 text tss, if given, is
-- kept); it reports whether it did.
local function lsmax(v, ts, tss)
  if ts and (v.ls == nil or ts > v.ls) then
    v.ls = ts
    if tss then v._ls, v._lsn = tss, ts end
    return true
  end
  return false
end

-- dlist puts the record's listing entries in step with whether the device
-- is placed here now.
local function dlist(P, d, v, current)
  if current then
    rcall('ZADD', P .. K_DEVS, '0', d)
    if v.on == 1 then rcall('ZADD', P .. K_ON, '0', d) else rcall('ZREM', P .. K_ON, d) end
  else
    rcall('ZREM', P .. K_DEVS, d)
    rcall('ZREM', P .. K_ON, d)
  end
end

---------------------------------------------------------------------------
-- Session record, fl:{w:W}:ss field SID: "D,ST,EN,GD,W,STATUS"
--   D device; ST start ts; EN end ts; GD the end's durationSec (each ""
--   when unknown); W when last written (retention); STATUS the end's
--   status as sent (last, so it may hold commas).
-- A session that moved to its home elsewhere leaves a tombstone here,
-- "~HOME," followed by its record (HOME "" for kept), so that late events
-- find the way and a crash mid-move loses nothing. The tombstone is
-- listed in fl:{w:W}:mv:D until Go has seen the home hold all it knew, and
-- then settles as "=HOME," (the record stays, for late events).

-- SPAT splits a session record (one after its tombstone's "~HOME,"):
-- device ids never hold '~' or '=', so a tombstone does not match it.
local SPAT = '^([^,~=]*),([^,]*),([^,]*),([^,]*),([^,]*),(.*)'

local function sget(raw)
  local tomb = nil
  local d, sts, ens, gds, ws, s = match(raw, SPAT)
  if not d then
    local off = find(raw, ',', 2, true)
    tomb = sub(raw, 2, off - 1)
    d, sts, ens, gds, ws, s = match(raw, SPAT, off + 1)
  end
  local st, en, gd = nil, nil, nil
  if sts ~= '' then st = tonumber(sts) end
  if ens ~= '' then en = tonumber(ens) end
  if gds ~= '' then gd = tonumber(gds) end
  -- W (when written) stays text: only the retention sweep reads it.
  return {d = d, st = st, en = en, gd = gd, s = s, tomb = tomb,
    _st = sts, _stn = st, _en = ens, _enn = en, _gd = gds, _gdn = gd, _w = ws}
end

-- swstr is the text of when the record was written.
local function swstr(v)
  if v.w then return nstr(v.w, v._wn, v._w) end
  return v._w or ''
end

-- ssame reports whether two records say the same of a session (all but
-- the write time), compared as values: the texts of the scripts and of
-- Go are canonical, so equal values are equal texts.
local function ssame(a, b)
  return a.d == b.d and a.st == b.st and a.en == b.en and a.gd == b.gd and (a.s or '') == (b.s or '')
end

local function sput(v)
  return v.d .. ',' .. nstr(v.st, v._stn, v._st) .. ',' .. nstr(v.en, v._enn, v._en) .. ',' .. nstr(v.gd, v._gdn, v._gd) ..
    ',' .. swstr(v) .. ',' .. (v.s or '')
end

-- sat is when the session started: its start, else its end minus durationSec.
local function sat(v)
  if v.st then return v.st end
  return v.en - (v.gd or 0) * 1000
end

-- dayOf is the UTC day number of ms (floor, without a call to it).
local function dayOf(ms) return (ms - ms % DAY_MS) / DAY_MS end

-- sdur is the duration of an ended session.
local function sdur(v)
  if v.gd then return v.gd end
  local x = v.st and v.en - v.st
  if x and x > 0 then return (x - x % 1000) / 1000 end
  return 0
end

-- sdurstr is the text of duration dur of record v (sdur), its
-- durationSec's text when it is that.
local function sdurstr(v, dur)
  if v.gd and dur == v.gd then return nstr(v.gd, v._gdn, v._gd) end
  if dur == 0 then return '0' end
  return fmt(dur)
end

-- ecmp is 1 when end a wins over end b, -1 when b wins, 0 when equal:
-- the earliest ts wins (a redelivery without ts, stamped on arrival, never
-- moves an end), then the greater durationSec (absent below any), then the
-- greater status in byte order.
local function ecmp(a, b)
  if a.en ~= b.en then return ncmp(b.en, a.en) end
  local x, y = a.gd or -1, b.gd or -1
  if x ~= y then return ncmp(x, y) end
  return bytecmp(a.s or '', b.s or '')
end

-- sjoinInto merges what record a knows of a session into record b (what
-- arrives), in place, and returns b: the earliest start, the winning end
-- (ecmp), b's write time when it has one.
local function sjoinInto(b, a)
  if a.d ~= '' then b.d = a.d end
  if not (b.st and (not a.st or b.st < a.st)) then b.st, b._st, b._stn = a.st, a._st, a._stn end
  if not (b.en and (not a.en or ecmp(b, a) > 0)) then
    b.en, b.gd, b.s, b._en, b._enn, b._gd, b._gdn = a.en, a.gd, a.s, a._en, a._enn, a._gd, a._gdn
  end
  if not (b.w or b._w and b._w ~= '') then b.w, b._w, b._wn = a.w, a._w, a._wn end
  return b
end

-- sjoin merges what two records know of one session, b being what
-- arrives, into a new record.
local function sjoin(a, b)
  return sjoinInto({d = b.d, st = b.st, en = b.en, gd = b.gd, s = b.s, w = b.w, _st = b._st, _stn = b._stn,
    _en = b._en, _enn = b._enn, _gd = b._gd, _gdn = b._gdn, _w = b._w, _wn = b._wn}, a)
end

-- satstr is the text of sat(v).
local function satstr(v)
  if v.st then return nstr(v.st, v._stn, v._st) end
  return fmt(v.en - (v.gd or 0) * 1000)
end

local function slabel(s)
  if STATUS_LABELS[s] then return s end
  return 'other'
end

-- activeElsewhere reports whether device d has another ended session in
-- workspace P than sid whose end falls on the same UTC day as ms.
local function activeElsewhere(P, d, sid, ms)
  local day = dayOf(ms)
  for _, other in ipairs(rcall('ZRANGE', P .. K_HD .. d, 0, -1)) do
    if other ~= sid then
      local raw = rcall('HGET', P .. K_SS, other)
      if raw then
        local o = sget(raw)
        if not o.tomb and o.en and dayOf(o.en) == day then return true end
      end
    end
  end
  return false
end

-- hslabel and hend make the names that K.hsl and HEND keep.
local function hslabel(K, lab)
  local k = K.hs .. lab
  K.hsl[lab] = k
  return k
end

local function hend(lab)
  local k = H_ENDED .. lab
  HEND[lab] = k
  return k
end

-- scount moves the counts of workspace P from what record old contributes
-- to what record new does (either may be nil): listing position (by
-- "at", and by status label for ended ones), liveness, and, for ended
-- sessions, seconds and active devices by UTC day and the totals by
-- status. (A month's usage is summed from its days when it is read.)
local function scount(P, sid, old, new, retention)
  local d = (new or old).d
  local K = wsk(P)
  local oat, nat, olab, nlab = nil, nil, nil, nil
  local oe, ne = old and old.en, new and new.en
  if old then
    oat = sat(old)
    if oe then olab = slabel(old.s) end
  end
  local nats = nil
  if new then
    nat = sat(new)
    if ne then nlab = slabel(new.s) end
    if nat ~= oat or nlab and nlab ~= olab then nats = satstr(new) end
  end
  if nat and nat ~= oat then
    rcall('ZADD', K.hist, nats, sid)
    rcall('ZADD', K.hd .. d, nats, sid)
  end
  if olab and olab ~= nlab then rcall('ZREM', K.hsl[olab] or hslabel(K, olab), sid) end
  if nlab and (nlab ~= olab or nat ~= oat) then rcall('ZADD', K.hsl[nlab] or hslabel(K, nlab), nats, sid) end
  -- Sessions without an end, by start: live within the bound, abandoned
  -- after (both read from here).
  local olive = old and old.st and not oe
  local nlive = new and new.st and not ne
  if nlive then
    if not olive or old.st ~= new.st then rcall('ZADD', K.live, nstr(new.st, new._stn, new._st), sid) end
  elseif olive then
    rcall('ZREM', K.live, sid)
  end
  if not (oe or ne) then return end
  local odur, ndur = 0, 0
  if oe then odur = sdur(old) end
  if ne then ndur = sdur(new) end
  if oe and ne and oe == ne and odur == ndur and olab == nlab then return end
  local tot = K.tot
  local nday = ne and dayOf(ne)
  if oe then
    local day = dayOf(oe)
    if nday == day then
      -- The same day: move the seconds, keep the active device.
      if ndur ~= odur then rcall('HINCRBY', K.secd, num(day), fmt(ndur - odur)) end
    else
      rcall('HINCRBY', K.secd, num(day), fmt(-odur))
      if not activeElsewhere(P, d, sid, oe) then rcall('SREM', K.act .. num(day), d) end
      if not ne then rcall('ZREM', K.ends, sid) end
    end
    if ndur ~= odur or not ne then rcall('HINCRBY', tot, H_SECONDS, fmt(ndur - odur)) end
    if olab ~= nlab then rcall('HINCRBY', tot, HEND[olab] or hend(olab), '-1') end
    if not ne then return end
    if oe ~= ne then rcall('ZADD', K.ends, nstr(ne, new._enn, new._en), sid) end
    if nday == day then
      if olab ~= nlab then rcall('HINCRBY', tot, HEND[nlab] or hend(nlab), '1') end
      return
    end
  end
  -- A new end (or one moved to another day).
  local days = num(nday)
  local nds = sdurstr(new, ndur)
  if not oe then
    rcall('ZADD', K.ends, nstr(ne, new._enn, new._en), sid)
    rcall('HINCRBY', tot, H_SECONDS, nds)
    rcall('HINCRBY', tot, HEND[nlab] or hend(nlab), '1')
  elseif olab ~= nlab then
    rcall('HINCRBY', tot, HEND[nlab] or hend(nlab), '1')
  end
  rcall('HINCRBY', K.secd, days, nds)
  local act = K.actk
  if K.actday ~= nday then
    act = K.act .. days
    K.actday, K.actk = nday, act
  end
  if rcall('SADD', act, d) == 1 then
    rcall('PEXPIREAT', act, fmt((nday + 1) * DAY_MS + retention))
  end
end

-- stomb turns session sid of workspace P into a tombstone pointing at
-- home ("" for kept) that holds record content, dropping the counts of
-- record counted (nil when it counted nothing here), and lists it as
-- moving until Go settles it (settle.lua).
local function stomb(P, sid, counted, content, home, retention)
  if counted then scount(P, sid, counted, nil, retention) end
  local K = wsk(P)
  rcall('HSET', K.ss, sid, '~' .. (home or '') .. ',' .. sput(content))
  rcall('SADD', K.mv .. content.d, sid)
end

---------------------------------------------------------------------------
-- Kept events of a device, fl:{d:B}:pend:D (keep.lua): "s:SID" per
-- session, counted in "n", ordered by "at" in fl:{d:B}:pq:D so that the
-- oldest goes first past the bound.

-- pkeep stores rec, what is known of session sid, among device d's kept
-- events (bucket prefix B). At most bound sessions are kept: past it, the
-- one with the oldest "at" is dropped. Returns how many were dropped.
local function pkeep(B, d, sid, rec, isNew, bound)
  local pk, pq = B .. K_PEND .. d, B .. K_PQ .. d
  rcall('HSET', pk, H_SESSION .. sid, sput(rec))
  rcall('ZADD', pq, fmt(sat(rec)), sid)
  local dropped = 0
  if isNew then
    local n = rcall('HINCRBY', pk, H_SESSIONS, '1')
    while n > bound do
      local old = rcall('ZPOPMIN', pq)
      if #old == 0 then break end
      rcall('HDEL', pk, H_SESSION .. old[1])
      n = rcall('HINCRBY', pk, H_SESSIONS, '-1')
      dropped = dropped + 1
    end
  end
  rcall('PEXPIRE', pk, PENDING_TTL_MS_S)
  rcall('PEXPIRE', pq, PENDING_TTL_MS_S)
  return dropped
end

-- punkeep drops kept session sid of device d once its home has it.
local function punkeep(B, d, sid)
  if rcall('HDEL', B .. K_PEND .. d, H_SESSION .. sid) == 1 then
    rcall('HINCRBY', B .. K_PEND .. d, H_SESSIONS, '-1')
    rcall('ZREM', B .. K_PQ .. d, sid)
  end
end
