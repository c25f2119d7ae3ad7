-- BATCH device.online.changed events per request.
local devices = tonumber(os.getenv("DEVICES") or "10000")
local batch = tonumber(os.getenv("BATCH") or "100")
local secret = os.getenv("SECRET") or "bench-secret"
local n = 0
request = function()
  local parts = {}
  for i = 1, batch do
    n = n + 1
    local d = math.random(0, devices - 1)
    parts[i] = string.format('{"type":"device.online.changed","qdDeviceId":"bd%d","online":%s}', d, (n % 2 == 0) and "true" or "false")
  end
  return wrk.format("POST", "/backend/webhook", {["x-webhook-secret"] = secret, ["content-type"] = "application/json"}, "[" .. table.concat(parts, ",") .. "]")
end
