-- Settlement of one admitted request, idempotent by its id: the first call for an id
-- that the scope still holds applies it; a repeat (a retry after a timeout that did run,
-- a reconnect) finds nothing held and only releases the slot again, which is a no-op.
--
-- KEYS, per scope: its hash, its in-flight set, its held set and its leases set (as in
--   admit.lua; the leases set is not read here).
-- ARGV: minute of admission, estimated tokens, tokens used, cost (nano-USD), request id,
--   undo (1: the admission is given back whole — it timed out at the gateway, which
--   served the request from its local counters instead), counted (1: the admission
--   counted the request toward RPM).
local minute = tonumber(ARGV[1]); local est_t = tonumber(ARGV[2])
local used = tonumber(ARGV[3]); local cost = tonumber(ARGV[4])
local rid = ARGV[5]; local undo = tonumber(ARGV[6]) == 1
local counted = tonumber(ARGV[7]) == 1
local applied = 0
for i = 1, #KEYS, 4 do
  local h = KEYS[i]; local z = KEYS[i+1]; local q = KEYS[i+2]
  redis.call('ZREM', z, rid)
  if redis.call('ZREM', q, rid) == 1 then
    applied = 1
    local held = tonumber(redis.call('HGET', h, 'q:' .. rid)) or 0
    redis.call('HDEL', h, 'q:' .. rid)
    local same = tonumber(redis.call('HGET', h, 'm')) == minute
    local dt = used
    if same then dt = used - est_t end
    if undo then
      dt = 0
      if same then
        dt = 0 - est_t
        if counted and redis.call('HINCRBY', h, 'r', -1) < 0 then redis.call('HSET', h, 'r', 0) end
      end
    end
    -- `0 - x`, not `-x`: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
    if redis.call('HINCRBY', h, 't', dt) < 0 then redis.call('HSET', h, 't', 0) end
    if redis.call('HINCRBY', h, 'v', 0 - held) < 0 then redis.call('HSET', h, 'v', 0) end
    if not undo then redis.call('HINCRBY', h, 's', cost) end
  end
end
return applied
