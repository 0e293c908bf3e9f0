-- wrk script for bench/bench_serve.py: GET /users/userN/recommendations, N cycling over the seeded users; prints
-- one JSON line with the figures (wrk's own report has no p95).
local users = tonumber(os.getenv("BENCH_USERS") or "300")
local model = os.getenv("BENCH_MODEL") or "lstm"
local counter = 0

request = function()
  counter = counter + 1
  return wrk.format("GET", "/users/user" .. (counter % users) .. "/recommendations?k=10&model=" .. model)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
