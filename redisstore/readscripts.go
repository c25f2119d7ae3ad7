package redisstore

import "github.com/redis/go-redis/v9"

// devicesScript returns one page of a workspace's devices as id, record
// pairs, limit+1 at most (the extra one says there is a next page).
// KEYS[1] = fl:{w:W}:dev. ARGV: source zset ("devs" or "on"), last id of the
// previous page ("" for the first), limit, online filter ("", "0", "1"),
// lower-case os filter ("" for none).
var devicesScript = redis.NewScript(codecLua + `
local P = string.sub(KEYS[1], 1, -4)
local src = P .. ARGV[1]
local limit, onf, osf = tonumber(ARGV[3]), ARGV[4], ARGV[5]
local filtered = (onf == '0') or (osf ~= '')
local chunk = limit + 1
if filtered then chunk = 512 end
local min = '-'
if ARGV[2] ~= '' then min = '(' .. ARGV[2] end
local out, n = {}, 0
while n <= limit do
  local ids = redis.call('ZRANGEBYLEX', src, min, '+', 'LIMIT', 0, chunk)
  for _, d in ipairs(ids) do
    min = '(' .. d
    local raw = redis.call('HGET', KEYS[1], d)
    if raw then
      local ok = true
      if filtered then
        local dev = dget(raw)
        if onf == '0' and dev.on == 1 then ok = false end
        if ok and osf ~= '' and string.lower(cjson.decode(dev.cold).o or '') ~= osf then ok = false end
      end
      if ok then
        out[#out + 1] = d
        out[#out + 1] = raw
        n = n + 1
        if n > limit then break end
      end
    end
  end
  if #ids < chunk then break end
end
return out
`)

// sessionsScript returns one page of sessions, newest "at" first, as
// groups of 5: id, at ms, status, duration s, device; limit+1 at most.
// KEYS[1] = fl:{w:W}:dev. ARGV: source zset ("hist" or "hd:DEVICE"), score
// and id of the previous page's last item ("" for the first page), limit,
// status filter, now ms, live bound ms.
var sessionsScript = redis.NewScript(codecLua + `
local P = string.sub(KEYS[1], 1, -4)
local src = P .. ARGV[1]
local cs, csid, limit, stf = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now, bound = tonumber(ARGV[6]), tonumber(ARGV[7])
local csn = tonumber(cs)
local max = '+inf'
if cs ~= '' then max = cs end
local off, out, n = 0, {}, 0
while n <= limit do
  local chunk = redis.call('ZREVRANGEBYSCORE', src, max, '-inf', 'WITHSCORES', 'LIMIT', off, 256)
  off = off + 256
  for k = 1, #chunk, 2 do
    local sid, sc = chunk[k], tonumber(chunk[k + 1])
    if not (csn and sc == csn and sid >= csid) then
      local raw = redis.call('HGET', P .. 'ss', sid)
      if raw then
        local s = sget(raw)
        local st, du = s.s, s.du
        if not s.en then
          if s.st < now - bound then
            st, du = 'abandoned', 0
          else
            st, du = 'live', math.floor((now - s.st) / 1000)
            if du < 0 then du = 0 end
          end
        end
        if stf == '' or stf == st then
          out[#out + 1] = sid
          out[#out + 1] = string.format('%d', sc)
          out[#out + 1] = st
          out[#out + 1] = du
          out[#out + 1] = s.d
          n = n + 1
          if n > limit then break end
        end
      end
    end
  end
  if #chunk < 512 then break end
end
return out
`)

// usageScript sums the usage of [from, to): whole UTC days from the daily
// aggregates, the partial days at either end from the ended sessions
// themselves. Returns seconds, active devices, registered devices.
// KEYS[1] = fl:{w:W}:dev. ARGV: from ms, to ms, now ms, live bound ms.
var usageScript = redis.NewScript(codecLua + `
local P = string.sub(KEYS[1], 1, -4)
local from, to, now, bound = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local D = 86400000
local tmp = P .. 'tmp:usage'
redis.call('DEL', tmp)
local secs = 0
local function scan(a, b)
  local sids = redis.call('ZRANGEBYSCORE', P .. 'ends', string.format('%d', a), '(' .. string.format('%d', b))
  for _, sid in ipairs(sids) do
    local raw = redis.call('HGET', P .. 'ss', sid)
    if raw then
      local s = sget(raw)
      secs = secs + s.du
      redis.call('SADD', tmp, s.d)
    end
  end
end
local fd, td = math.ceil(from / D), math.floor(to / D)
if fd < td then
  local days, sets = {}, {}
  for d = fd, td - 1 do
    days[#days + 1] = string.format('%d', d)
    sets[#sets + 1] = P .. 'act:' .. string.format('%d', d)
    if #days == 500 or d == td - 1 then
      for _, v in ipairs(redis.call('HMGET', P .. 'secd', unpack(days))) do
        if v then secs = secs + tonumber(v) end
      end
      sets[#sets + 1] = tmp
      redis.call('SUNIONSTORE', tmp, unpack(sets))
      days, sets = {}, {}
    end
  end
  if from < fd * D then scan(from, fd * D) end
  if td * D < to then scan(td * D, to) end
else
  scan(from, to)
end
if from <= now and now < to then
  local sids = redis.call('ZRANGEBYSCORE', P .. 'live', '(' .. string.format('%d', now - bound), '+inf')
  for _, sid in ipairs(sids) do
    local raw = redis.call('HGET', P .. 'ss', sid)
    if raw then redis.call('SADD', tmp, sget(raw).d) end
  end
end
local active = redis.call('SCARD', tmp)
redis.call('DEL', tmp)
return {secs, active, redis.call('ZCARD', P .. 'devs')}
`)

// unbindScript clears a device's user. KEYS[1] = fl:{w:W}:dev, ARGV[1] =
// device. Returns the new record, or nil when the device is not there.
var unbindScript = redis.NewScript(codecLua + `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local dev = dget(raw)
local cold = cjson.decode(dev.cold)
cold.u = nil
dev.cold = cjson.encode(cold)
raw = dput(dev)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
`)

// rotateScript stores a device's new secret hash (fl:{w:W}:sec) and takes
// the device offline until an online event newer than the rotation.
// KEYS[1] = fl:{w:W}:dev. ARGV: device, secret hash (hex), rotation ms.
// Returns 1, or 0 when the device is not there.
var rotateScript = redis.NewScript(codecLua + `
local P = string.sub(KEYS[1], 1, -4)
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local dev = dget(raw)
local rt = tonumber(ARGV[3])
dev.rt = ARGV[3]
dev.on = 0
if dev.ot <= rt then dev.ot = rt + 1 end
redis.call('ZREM', P .. 'on', ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], dput(dev))
redis.call('HSET', P .. 'sec', ARGV[1], ARGV[2])
return 1
`)

// addMemberScript adds a member unless the email is taken. KEYS[1] =
// fl:{w:W}:dev. ARGV: lower-case email, JSON record. Returns 1, or 0 when
// the email is already a member.
var addMemberScript = redis.NewScript(`
local P = string.sub(KEYS[1], 1, -4)
if redis.call('HSETNX', P .. 'mem', ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', P .. 'memidx', 0, ARGV[1])
return 1
`)
