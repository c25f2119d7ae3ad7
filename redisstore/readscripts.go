package redisstore

import "github.com/redis/go-redis/v9"

// devicesScript returns up to want devices after a given id as id, record
// pairs, looking at no more than budget entries, then the last id it
// looked at and "1" when the source is exhausted.
// KEYS[1] = fl:{w:W}:dev. ARGV: source zset ("devs" or "on"), last id seen
// ("" for the start), want, online filter ("", "0"), lower-case os filter
// ("" for none), budget.
var devicesScript = redis.NewScript(codecLua + `
local P = string.sub(KEYS[1], 1, -4)
local src = P .. ARGV[1]
local want, onf, osf, budget = tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
local filtered = (onf == '0') or (osf ~= '')
local chunk = want
if filtered then chunk = 256 end
local min, last = '-', ARGV[2]
if last ~= '' then min = '(' .. last end
local out, n, looked, done = {}, 0, 0, '0'
while n < want and looked < budget do
  local ids = redis.call('ZRANGEBYLEX', src, min, '+', 'LIMIT', 0, chunk)
  local stopped = false
  for _, d in ipairs(ids) do
    min, last = '(' .. d, d
    looked = looked + 1
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
      end
    end
    if n == want or looked >= budget then stopped = true break end
  end
  if not stopped and #ids < chunk then done = '1' break end
end
out[#out + 1] = last
out[#out + 1] = done
return out
`)

// sessionsScript returns up to want sessions after a position, newest
// "at" first, as groups of 5 (id, at ms, status, duration s, device),
// looking at no more than budget entries, then the score and id of the
// last entry it looked at and "1" when the source is exhausted. Entries
// tied on a score are listed by id, descending, so "after" a position
// (score, id) means a lower score, or the same score and a lower id.
// KEYS[1] = fl:{w:W}:dev. ARGV: source zset ("hist" or "hd:DEVICE"), score
// and id of the last entry seen ("" for the start), want, status filter,
// now ms, live bound ms, budget.
var sessionsScript = redis.NewScript(codecLua + `
local P = string.sub(KEYS[1], 1, -4)
local src = P .. ARGV[1]
local cs, csid, want, stf = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now, bound, budget = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local csn = tonumber(cs)
local max = '+inf'
if cs ~= '' then max = cs end
local off, out, n, looked, done = 0, {}, 0, 0, '0'
local lastS, lastID = cs, csid
while n < want and looked < budget do
  local chunk = redis.call('ZREVRANGEBYSCORE', src, max, '-inf', 'WITHSCORES', 'LIMIT', off, 256)
  off = off + 256
  local stopped = false
  for k = 1, #chunk, 2 do
    local sid, sc = chunk[k], tonumber(chunk[k + 1])
    if not (csn and sc == csn and sid >= csid) then
      looked = looked + 1
      lastS, lastID = string.format('%d', sc), sid
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
          out[#out + 1] = lastS
          out[#out + 1] = st
          out[#out + 1] = du
          out[#out + 1] = s.d
          n = n + 1
        end
      end
      if n == want or looked >= budget then stopped = true break end
    end
  end
  if not stopped and #chunk < 512 then done = '1' break end
end
out[#out + 1] = lastS
out[#out + 1] = lastID
out[#out + 1] = done
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

// monthUsageScript is usageScript for exactly one UTC calendar month, read
// from the per-month totals without scanning or writing anything.
// KEYS[1] = fl:{w:W}:dev. ARGV: month (months since 1970-01), whether the
// month contains now ("1"/"0"), now ms, live bound ms.
var monthUsageScript = redis.NewScript(codecLua + `
local P = string.sub(KEYS[1], 1, -4)
local act = P .. 'actm:' .. ARGV[1]
local secs = tonumber(redis.call('HGET', P .. 'secm', ARGV[1]) or '0')
local active = redis.call('SCARD', act)
if ARGV[2] == '1' then
  local now, bound = tonumber(ARGV[3]), tonumber(ARGV[4])
  local extra = {}
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'live', '(' .. string.format('%d', now - bound), '+inf')) do
    local raw = redis.call('HGET', P .. 'ss', sid)
    if raw then
      local d = sget(raw).d
      if not extra[d] and redis.call('SISMEMBER', act, d) == 0 then
        extra[d] = true
        active = active + 1
      end
    end
  end
end
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
