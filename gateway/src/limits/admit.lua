-- Admission, atomic across every gateway: per scope, releases reservations that outlived
-- their lease and leases no gateway renews, rolls the minute and budget period, checks
-- concurrency, RPM, TPM and budget in order, and counts the request only if every scope
-- passes. (leases.lua is prepended.)
--
-- KEYS, per scope: its hash, its in-flight set (request id -> lease end), its held set
--   (request id -> lease end; the hash keeps each held reservation as `q:<id>`) and its
--   leases set (see leases.lua).
-- ARGV: now (ms), minute, estimated tokens, estimated cost (nano-USD), request id, lease
--   (ms), scope count, counted (1: the request counts toward RPM; 0: a reservation made
--   after a cache miss for a request already counted), then per scope: period start, rpm, tpm, concurrency, budget, seed
--   (-1: none), seeded (1: the seed was read from PostgreSQL just now).
-- Every number is an integer below 2^53, so Lua holds it exactly.
-- Returns {0, requests, tokens, ...} per scope when admitted, {kind, scope, requests,
-- tokens} when refused, {5, scope} when a scope with a budget has no state here (new, or
-- lost to a flush or restart) and its seed was not just read: the caller reads the spend
-- from PostgreSQL and asks again.
local now = tonumber(ARGV[1]); local minute = tonumber(ARGV[2])
local est_t = tonumber(ARGV[3]); local est_c = tonumber(ARGV[4])
local rid = ARGV[5]; local lease = tonumber(ARGV[6]); local n = tonumber(ARGV[7])
local inc = tonumber(ARGV[8])
local keep = 3024000000
local st = {}
for i = 1, n do
  local h = KEYS[4*i-3]; local b = 8 + (i-1)*7
  local budget = tonumber(ARGV[b+5]); local seeded = tonumber(ARGV[b+7])
  if budget >= 0 and seeded == 0 and redis.call('EXISTS', h) == 0 then return {5, i} end
end
local ms = clock()
for i = 1, n do
  local h = KEYS[4*i-3]; local z = KEYS[4*i-2]; local q = KEYS[4*i-1]; local ls = KEYS[4*i]
  local b = 8 + (i-1)*7
  local period = tonumber(ARGV[b+1]); local rpm = tonumber(ARGV[b+2])
  local tpm = tonumber(ARGV[b+3]); local conc = tonumber(ARGV[b+4])
  local budget = tonumber(ARGV[b+5]); local seed = tonumber(ARGV[b+6])
  purge_leases(h, ls, ms)
  free_held(h, q, now)
  local v = redis.call('HMGET', h, 'm', 'r', 't', 'p', 's', 'v', 'L')
  local r = tonumber(v[2]) or 0; local t = tonumber(v[3]) or 0
  local s = tonumber(v[5]) or 0; local res = tonumber(v[6]) or 0
  if tonumber(v[1]) ~= minute then r = 0; t = 0 end
  if tonumber(v[4]) ~= period then s = 0; res = 0 end
  if seed > s then s = seed end
  local c = 0
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    -- Requests admitted one by one, and the slots leased by gateways in blocks.
    c = redis.call('ZCARD', z) + (tonumber(v[7]) or 0)
  end
  if conc >= 0 and c >= conc then return {1, i, r, t} end
  if rpm >= 0 and r >= rpm then return {2, i, r, t} end
  if tpm >= 0 and t > 0 and t + est_t > tpm then return {3, i, r, t} end
  if budget >= 0 and (s >= budget or s + res + est_c > budget) then return {4, i, r, t} end
  st[i] = {r + inc, t + est_t, s, res + est_c, period, conc}
end
local out = {0}
for i = 1, n do
  local x = st[i]; local h = KEYS[4*i-3]; local z = KEYS[4*i-2]; local q = KEYS[4*i-1]
  redis.call('HSET', h, 'm', minute, 'r', x[1], 't', x[2], 'p', x[5], 's', x[3], 'v', x[4],
    'q:' .. rid, est_c)
  redis.call('ZADD', q, now + lease, rid)
  redis.call('PEXPIRE', h, keep); redis.call('PEXPIRE', q, keep)
  if x[6] >= 0 then
    redis.call('ZADD', z, now + lease, rid)
    redis.call('PEXPIRE', z, lease)
  end
  out[#out+1] = x[1]; out[#out+1] = x[2]
end
return out
