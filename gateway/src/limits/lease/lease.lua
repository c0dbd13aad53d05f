-- One gateway's lease on one scope, atomic: reports what the gateway used since the last
-- call and sets what it holds, each limit capped by the room the other holders leave.
-- The same call takes a block, refills it, renews it (heartbeat) and gives back what is
-- not used (return). Every amount sent is absolute (what the lease holds and uses now) and
-- spend is cumulative, so a call repeated or applied late changes nothing twice.
-- (leases.lua is prepended.)
--
-- KEYS: the scope's hash, in-flight set, held set and leases set (as in admit.lua).
-- ARGV: now (ms, the gateway's clock, for the per-request sets), lease id, minute, period
--   start, rpm, tpm, concurrency, budget (-1: no such limit), seed (-1: none), seeded
--   (1: read from PostgreSQL just now), then requests wanted and used this minute, tokens
--   wanted and used this minute and needed (the estimate of a request waiting for this
--   call, 0 for none), slots wanted and used, reservation wanted and used (nano-USD), the
--   lease's spend so far and the part of it the gateway knows applied, TTL (ms).
-- "Used" is what requests already admitted hold: it is kept whatever the room (those
--   requests run), so a lease never holds less than it uses. "Wanted" is capped by the
--   room: a limit minus what the others hold, checked in admit.lua's order of limits; a
--   refusal is the gateway's to make when what it holds does not cover a request.
-- Every number is an integer below 2^53, so Lua holds it exactly.
-- Returns {0, minute, requests held, tokens held, slots held, reservation held, requests
--   this minute, tokens this minute, spend}, the minute being the newer of the gateway's
--   and the scope's (a gateway whose clock is behind gets the current window, never an
--   old one back); {5} when the scope has a budget, no state here (new, or lost to a flush
--   or restart) and its seed was not just read: the caller reads the spend from
--   PostgreSQL and asks again.
local h = KEYS[1]; local z = KEYS[2]; local q = KEYS[3]; local ls = KEYS[4]
local now = tonumber(ARGV[1]); local id = ARGV[2]
local minute = tonumber(ARGV[3]); local period = tonumber(ARGV[4])
local rpm = tonumber(ARGV[5]); local tpm = tonumber(ARGV[6])
local conc = tonumber(ARGV[7]); local budget = tonumber(ARGV[8])
local seed = tonumber(ARGV[9]); local seeded = tonumber(ARGV[10])
local want_r = tonumber(ARGV[11]); local used_r = tonumber(ARGV[12])
local want_t = tonumber(ARGV[13]); local used_t = tonumber(ARGV[14])
local need_t = tonumber(ARGV[15])
local want_c = tonumber(ARGV[16]); local used_c = tonumber(ARGV[17])
local want_v = tonumber(ARGV[18]); local used_v = tonumber(ARGV[19])
local spend = tonumber(ARGV[20]); local acked = tonumber(ARGV[21])
local ttl = tonumber(ARGV[22])
local keep = 3024000000
if budget >= 0 and seeded == 0 and redis.call('EXISTS', h) == 0 then return {5} end
local ms = clock()
purge_leases(h, ls, ms)
free_held(h, q, now)

local f = redis.call('HMGET', h, 'm', 'r', 't', 'p', 's', 'v', 'L',
  'lm:' .. id, 'lr:' .. id, 'lt:' .. id, 'lc:' .. id, 'lv:' .. id, 'ln:' .. id)
local m = tonumber(f[1]); local r = tonumber(f[2]) or 0; local t = tonumber(f[3]) or 0
local s = tonumber(f[5]) or 0; local v = tonumber(f[6]) or 0; local L = tonumber(f[7]) or 0
local lr = tonumber(f[9]) or 0; local lt = tonumber(f[10]) or 0
local lc = tonumber(f[11]) or 0; local lv = tonumber(f[12]) or 0

-- The window: a newer minute starts afresh; an older one is answered for the current.
if m == nil or minute > m then
  m = minute; r = 0; t = 0
elseif minute < m then
  minute = m; used_r = 0; used_t = 0
end
if tonumber(f[8]) ~= minute then lr = 0; lt = 0 end
if tonumber(f[4]) ~= period then s = 0; v = 0; lv = 0 end

-- Spend: only what was not applied yet (the lease's marker, or what the gateway knows
-- applied when the marker is gone).
local applied = tonumber(f[13]) or acked
if spend > applied then s = s + (spend - applied); applied = spend end
-- The seed (the period's spend in PostgreSQL when the key was loaded) is a floor: it has
-- what a killed gateway never reported. It is compared after this report, never added
-- to it: PostgreSQL logs a request before a slow Redis hears of its spend, so a key
-- loaded while Redis was slow has this report in its seed already.
if seed > s then s = seed end

-- What the lease holds of one limit: what it wants, within the room the others leave
-- (none when `capped` is false), and never less than it uses.
local function hold(capped, room, want, used)
  local x = want
  if capped and room < x then x = room end
  if x < used then x = used end
  return x
end

local function others_of(total, mine)
  if total - mine < 0 then return 0 end
  return total - mine
end

local or_ = others_of(r, lr)
local hr = hold(rpm >= 0, rpm - or_, want_r, used_r)

local ot = others_of(t, lt)
local ht = hold(tpm >= 0, tpm - ot, want_t, used_t)
-- The first request of a minute always passes (as in admit.lua).
if need_t > 0 and ot == 0 and used_t == 0 and ht < need_t then ht = need_t end

redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
local zc = redis.call('ZCARD', z)
local leased = others_of(L, lc)
local hc = hold(conc >= 0, conc - zc - leased, want_c, used_c)

local ov = others_of(v, lv)
local hv = hold(budget >= 0, budget - s - ov, want_v, used_v)

redis.call('HSET', h, 'm', m, 'r', or_ + hr, 't', ot + ht, 'p', period, 's', s,
  'v', ov + hv, 'L', leased + hc,
  'lm:' .. id, minute, 'lr:' .. id, hr, 'lt:' .. id, ht, 'lc:' .. id, hc, 'lv:' .. id, hv,
  'ln:' .. id, applied)
redis.call('HDEL', h, 'lx:' .. id)
redis.call('ZADD', ls, ms + ttl, id)
redis.call('PEXPIRE', h, keep); redis.call('PEXPIRE', ls, keep)
return {0, minute, hr, ht, hc, hv, or_ + hr, ot + ht, s}
