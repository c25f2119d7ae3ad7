-- unreplay.lua: takes devices off fl:replays (replay.go) once they have no
-- session left to move, only where no placement listed them again since
-- they were read. KEYS[1] = fl:replays. ARGV: pairs of device, the score it
-- was read with.
for i = 1, #ARGV, 2 do
  if rcall('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then rcall('ZREM', KEYS[1], ARGV[i]) end
end
return 0
