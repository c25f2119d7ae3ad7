-- sessions.lua: up to want sessions after a position, newest "at" first,
-- as groups of 5 (id, at ms, status, duration s, device), looking at no
-- more than budget entries, then the score and id of the last entry it
-- looked at and "1" when the source is exhausted. Entries tied on a score
-- are listed by id, descending, so "after" a position (score, id) means a
-- lower score, or the same score and a lower id. Tombstones of sessions
-- that moved to another workspace are skipped.
-- KEYS[1] = fl:{w:W}:dev. ARGV: source zset ("hist", "hd:DEVICE",
-- "hs:LABEL" or "live"), score and id of the last entry seen ("" for the
-- start), want, status filter ("" for none), now ms, live bound ms, budget,
-- and the score range of the source to list: lowest (inclusive) and
-- highest ("(" for exclusive).
local P = sub(KEYS[1], 1, -4)
local src = P .. ARGV[1]
local cs, csid, want, stf = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now, bound, budget = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local lo, max = ARGV[9], ARGV[10]
local csn = tonumber(cs)
if cs ~= '' then max = cs end
local off, out, n, looked, done = 0, {}, 0, 0, '0'
local lastS, lastID = cs, csid
while n < want and looked < budget do
  local chunk = rcall('ZREVRANGEBYSCORE', src, max, lo, 'WITHSCORES', 'LIMIT', off, 256)
  off = off + 256
  local stopped = false
  for k = 1, #chunk, 2 do
    local sid, sc = chunk[k], tonumber(chunk[k + 1])
    if not (csn and sc == csn and bytecmp(sid, csid) >= 0) then
      looked = looked + 1
      lastS, lastID = fmt(sc), sid
      local raw = rcall('HGET', P .. K_SS, sid)
      if raw then
        local s = sget(raw)
        if not s.tomb then
          local st, du
          if s.en then
            st, du = s.s, sdur(s)
          elseif s.st < now - bound then
            st, du = 'abandoned', 0
          else
            st, du = 'live', floor((now - s.st) / 1000)
            if du < 0 then du = 0 end
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
