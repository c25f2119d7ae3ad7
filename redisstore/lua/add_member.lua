-- add_member.lua: adds a member unless the email is taken. KEYS[1] =
-- fl:{w:W}:dev. ARGV: lower-case email, JSON record. Returns 1, or 0 when
-- the email is already a member.
local P = sub(KEYS[1], 1, -4)
if rcall('HSETNX', P .. K_MEM, ARGV[1], ARGV[2]) == 0 then return 0 end
rcall('ZADD', P .. K_MEMIDX, '0', ARGV[1])
return 1
