-- One device.online.changed per request, over DEVICES registered devices.
local devices = tonumber(os.getenv("DEVICES") or "10000")
local secret = os.getenv("SECRET") or "bench-secret"
local n = 0
request = function()
  n = n + 1
  local d = math.random(0, devices - 1)
  local body = string.format('{"type":"device.online.changed","qdDeviceId":"bd%d","online":%s}', d, (n % 2 == 0) and "true" or "false")
  return wrk.format("POST", "/backend/webhook", {["x-webhook-secret"] = secret, ["content-type"] = "application/json"}, body)
end
