-- devices.lua: up to want devices after a given id as id, record pairs,
-- looking at no more than budget entries, then the last id it looked at
-- and "1" when the source is exhausted.
-- KEYS[1] = fl:{w:W}:dev. ARGV: source zset ("devs" or "on"), last id seen
-- ("" for the start), want, online filter ("", "0"), lower-case os filter
-- ("" for none), budget.
local P = sub(KEYS[1], 1, -4)
local src = P .. ARGV[1]
local want, onf, osf, budget = tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
local filtered = (onf == '0') or (osf ~= '')
local chunk = want
if filtered then chunk = 256 end
local min, last = '-', ARGV[2]
if last ~= '' then min = '(' .. last end
local out, n, looked, done = {}, 0, 0, '0'
while n < want and looked < budget do
  local ids = rcall('ZRANGEBYLEX', src, min, '+', 'LIMIT', 0, chunk)
  local stopped = false
  for _, d in ipairs(ids) do
    min, last = '(' .. d, d
    looked = looked + 1
    local raw = rcall('HGET', KEYS[1], d)
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
