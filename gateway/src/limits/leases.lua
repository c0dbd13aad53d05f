-- Shared by admit.lua and lease.lua (prepended to each): what a scope's hash keeps of the
-- leases gateways hold on it, and how a lease whose gateway stopped renewing it goes back.
--
-- A lease is one gateway's block on one scope. In the scope's hash, under its id:
--   lc:<id> slots held (their sum over every lease is `L`, counted with the in-flight set),
--   lv:<id> budget reservation held (part of `v`, as a request's `q:<id>` is),
--   lm:<id>, lr:<id>, lt:<id> the minute and the requests and tokens it holds in it (part
--     of `r` and `t`),
--   ln:<id> the lease's spend applied so far (its reports are cumulative: applying one
--     again adds nothing),
--   lx:<id> set once its slots and reservation went back because it expired.
-- The leases set (id -> expiry, Redis's own clock, so gateways' clocks do not matter)
-- holds every lease. An expired lease first gives back its slots and reservation and keeps
-- its markers for MARKER_KEEP (so a gateway cut off longer than the lease's TTL still
-- reports its spend once when it comes back), then its markers go too.
local MARKER_KEEP = 600000

-- Redis's clock, in ms.
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- `0 - x`, not `-x`: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
local function take(h, field, x)
  if x > 0 and redis.call('HINCRBY', h, field, 0 - x) < 0 then redis.call('HSET', h, field, 0) end
end

-- Gives back what lease `id` holds that lasts beyond a minute: its slots and reservation.
local function release_lease(h, id)
  local f = redis.call('HMGET', h, 'lc:' .. id, 'lv:' .. id)
  take(h, 'L', tonumber(f[1]) or 0)
  take(h, 'v', tonumber(f[2]) or 0)
  redis.call('HDEL', h, 'lc:' .. id, 'lv:' .. id)
end

-- Leases past their expiry, a few a call: the first time, their slots and reservation go
-- back; MARKER_KEEP later, their markers.
local function purge_leases(h, ls, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', ls, '-inf', now, 'LIMIT', 0, 16)) do
    if redis.call('HEXISTS', h, 'lx:' .. id) == 1 then
      redis.call('HDEL', h, 'lx:' .. id, 'lm:' .. id, 'lr:' .. id, 'lt:' .. id, 'ln:' .. id)
      redis.call('ZREM', ls, id)
    else
      release_lease(h, id)
      redis.call('HSET', h, 'lx:' .. id, 1)
      redis.call('ZADD', ls, now + MARKER_KEEP, id)
    end
  end
end

-- Per-request reservations whose request never settled (its gateway died), a few a call.
local function free_held(h, q, now)
  for _, old in ipairs(redis.call('ZRANGEBYSCORE', q, '-inf', now, 'LIMIT', 0, 16)) do
    take(h, 'v', tonumber(redis.call('HGET', h, 'q:' .. old)) or 0)
    redis.call('HDEL', h, 'q:' .. old); redis.call('ZREM', q, old)
  end
end
