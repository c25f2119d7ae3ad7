-- sync.lua: brings devices' records in one workspace in step with their
-- placement history (step 2 of a placement, see keys.go). KEYS[1] =
-- fl:{w:W}:dev. ARGV: now, live bound ms, retention ms, then 7 fields per
-- device: device, history (as the index holds it), and the registration in
-- this workspace that arrived with it ("" fields when none): ts, cold JSON,
-- name, os, user.
-- Per device: merges the history into the record (creating it), takes the
-- registration's name, os and user when it is the greatest here, lists the
-- device here only while this is its workspace now, and turns the sessions
-- whose home is now elsewhere into tombstones.
-- Returns per device {online, online ts, last seen, placed here now (1/0),
-- then the ids of the sessions Go must bring together at their home: those
-- that must move, those that moved but were not seen home yet (a crash
-- between the steps), and, when this record learns for the first time
-- that the device has moved, every session of the device here (one may
-- have been written here while this record lagged, beside a copy
-- elsewhere)}.

local P = sub(KEYS[1], 1, -4)
local W = wsOf(P)
local retention = tonumber(ARGV[3]) -- ARGV[1], ARGV[2]: now, the live bound (not needed here)
for i = 4, #ARGV, 7 do
  if ARGV[i + 2] ~= '' and not tonumber(ARGV[i + 2]) then return redis.error_reply('ERR fleetd: malformed registration') end
end

local out = {}
for i = 4, #ARGV, 7 do
  local d, h, rts = ARGV[i], ARGV[i + 1], opt(ARGV[i + 2])
  local raw = rcall('HGET', KEYS[1], d)
  local v
  if raw then v = dget(raw) else v = {on = 0, ot = nil, ls = nil, rg = nil, h = '', cold = '{}'} end
  local wasSimple = raw ~= nil and v.h == ''
  local hl = hunion(dhist(v, W), hparse(h))
  if rts then
    local rg = drg(v)
    local take = (rg == nil) or rts > rg
    if not take and rts == rg then
      local c = cjson.decode(v.cold)
      local cmp = bytecmp(ARGV[i + 4], c.n or '')
      if cmp == 0 then cmp = bytecmp(ARGV[i + 5], c.o or '') end
      if cmp == 0 then cmp = bytecmp(ARGV[i + 6], c.u or '') end
      take = cmp > 0
    end
    if take then v.rg, v.cold = rts, ARGV[i + 3] end
    lsmax(v, rts)
  end
  dsethist(v, hl, W)
  local current = howner(hl) == W
  dlist(P, d, v, current)
  rcall('HSET', KEYS[1], d, dput(v))
  local cur = 0
  if current then cur = 1 end
  local res = {v.on, optfmt(v.ot), optfmt(v.ls), cur}
  for _, sid in ipairs(rcall('SMEMBERS', P .. K_MV .. d)) do
    res[#res + 1] = sid
  end
  if v.h ~= '' and wasSimple then
    for _, sid in ipairs(rcall('ZRANGE', P .. K_HD .. d, 0, -1)) do
      res[#res + 1] = sid
    end
  end
  if v.h ~= '' then
    local hd = P .. K_HD .. d
    for _, seg in ipairs(hsegs(hl)) do
      if seg.ws ~= W then
        local lo, hi = '-inf', '+inf'
        if seg.lo then lo = fmt(seg.lo) end
        if seg.hi then hi = '(' .. fmt(seg.hi) end
        for _, sid in ipairs(rcall('ZRANGEBYSCORE', hd, lo, hi)) do
          local sraw = rcall('HGET', P .. K_SS, sid)
          if sraw then
            local s = sget(sraw)
            if not s.tomb then
              stomb(P, sid, s, s, seg.ws, retention)
              res[#res + 1] = sid
            end
          end
        end
      end
    end
  end
  out[#out + 1] = res
end
return out
