-- One state operation on one key of one namespace, atomically (Redis runs a script alone).
-- The same meaning as host/src/state/ops.rs, checked by the same conformance suite.
--
-- KEYS: 1 the key's value (a string, with the key's TTL as its native expiry, PXAT)
--       2 the namespace's index (sorted set, every key at score 0: byte order for list-keys)
--       3 the namespace's expiries (sorted set, score = expiry in Unix ms)
--       4 the namespace's sizes (hash, key -> key + value bytes: what an expired key frees)
--       5 the namespace's bytes (integer, the quota's count)
-- ARGV: 1 the prefix of value keys, 2 the key, 3 the op, 4 max value bytes,
--       5 max namespace bytes, 6.. the op's arguments
-- Replies: {'v', value} | {'n'} | {'b', 0|1} | {'i', decimal} | {'t', -2 absent | -1 | ms}
--          {'k', {keys}} | {'q', 'value'|'namespace', asked} | {'nan'} | {'overflow'}
local vkey, index, expiries, sizes, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, key, op = ARGV[1], ARGV[2], ARGV[3]
local max_value, max_ns = tonumber(ARGV[4]), tonumber(ARGV[5])

-- Redis's clock, not the hosts': every host sharing the store sees keys expire at one instant.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function ms(n) return string.format('%.0f', n) end

-- Removes key k (its value key vk) and everything the namespace keeps about it.
local function forget(k, vk)
  local size = tonumber(redis.call('HGET', sizes, k) or 0)
  redis.call('DEL', vk)
  redis.call('ZREM', index, k)
  redis.call('ZREM', expiries, k)
  redis.call('HDEL', sizes, k)
  if size > 0 then redis.call('DECRBY', used, size) end
end

-- Removes up to `limit` (-1: all) keys that expired, Redis having dropped their values or not.
-- A key is live through its expiry millisecond, as in ops.rs and Redis itself.
local function sweep(limit)
  local gone = redis.call('ZRANGEBYSCORE', expiries, '-inf', '(' .. ms(now), 'LIMIT', 0, limit)
  for _, k in ipairs(gone) do forget(k, prefix .. k) end
end

-- The live value of k and its expiry (nil: none); nil if absent, forgetting it if it expired
-- (or Redis evicted its value).
local function lookup(k, vk)
  if not redis.call('HGET', sizes, k) then return nil end
  local at = redis.call('ZSCORE', expiries, k)
  at = at and tonumber(at)
  local value = redis.call('GET', vk)
  if (at and at < now) or not value then
    forget(k, vk)
    return nil
  end
  return value, at
end

local function bytes() return tonumber(redis.call('GET', used) or 0) end

-- nil if a value of `vlen` bytes making the key `new` bytes instead of `old` fits the quotas;
-- else the refusal. Expired keys are swept before a refusal, so they never cause one.
local function admit(old, new, vlen)
  if vlen > max_value then return {'q', 'value', vlen} end
  local u = bytes()
  local total = u - old + new
  if total > u and total > max_ns then
    sweep(-1)
    u = bytes()
    total = u - old + new
    if total > u and total > max_ns then return {'q', 'namespace', total} end
  end
  return nil
end

-- Writes value with expiry `at` (nil: persistent) for the key, whose live entry had `old` bytes.
local function put(value, at, old)
  if at then
    redis.call('SET', vkey, value, 'PXAT', ms(at))
    redis.call('ZADD', expiries, ms(at), key)
  else
    redis.call('SET', vkey, value)
    redis.call('ZREM', expiries, key)
  end
  redis.call('ZADD', index, 0, key)
  local size = #key + #value
  redis.call('HSET', sizes, key, size)
  redis.call('INCRBY', used, size - old)
end

local function expiry(arg)
  if arg == '' then return nil end
  return now + tonumber(arg)
end

sweep(8)

if op == 'list' then
  -- ARGV[6]: '1' if ARGV[7] is a cursor; ARGV[8]: how many live keys to return at most.
  local want = tonumber(ARGV[8])
  local out, from = {}, '-'
  if ARGV[6] == '1' then from = '(' .. ARGV[7] end
  while #out < want do
    local batch = redis.call('ZRANGEBYLEX', index, from, '+', 'LIMIT', 0, want - #out)
    if #batch == 0 then break end
    for _, k in ipairs(batch) do
      if lookup(k, prefix .. k) then out[#out + 1] = k end
    end
    from = '(' .. batch[#batch]
  end
  return {'k', out}
end

if op == 'usage' then
  sweep(-1)
  return {'i', ms(bytes())}
end

local value, at = lookup(key, vkey)
local old = value and (#key + #value) or 0

if op == 'get' then
  if value then return {'v', value} end
  return {'n'}
elseif op == 'exists' then
  return {'b', value and 1 or 0}
elseif op == 'set' then
  -- ARGV[6]: TTL in ms ('' for none), ARGV[7]: the value.
  local new = ARGV[7]
  local refused = admit(old, #key + #new, #new)
  if refused then return refused end
  put(new, expiry(ARGV[6]), old)
  return {'b', 1}
elseif op == 'delete' then
  if value then forget(key, vkey) end
  return {'b', value and 1 or 0}
elseif op == 'increment' then
  -- ARGV[6]: the delta, decimal. Parsed as ops.rs parses (Rust's i64 from_str), then INCRBY
  -- does the exact 64-bit sum (Lua's numbers are doubles) and refuses an overflow.
  local current = value or '0'
  if not string.match(current, '^%-?%d+$') then return {'nan'} end
  local negative = string.sub(current, 1, 1) == '-'
  local digits = string.gsub(negative and string.sub(current, 2) or current, '^0+', '')
  if digits == '' then digits, negative = '0', false end
  local limit = negative and '9223372036854775808' or '9223372036854775807'
  if #digits > 19 or (#digits == 19 and digits > limit) then return {'nan'} end
  local canonical = (negative and '-' or '') .. digits
  -- INCRBY reads only canonical decimals ("007" is 7 to Rust, an error to Redis).
  if value and canonical ~= value then redis.call('SET', vkey, canonical, 'KEEPTTL') end
  local function undo()
    if value then redis.call('SET', vkey, value, 'KEEPTTL') else redis.call('DEL', vkey) end
  end
  local sum = redis.pcall('INCRBY', vkey, ARGV[6])
  if type(sum) == 'table' and sum.err then
    undo()
    return {'overflow'}
  end
  local new = redis.call('GET', vkey)
  local refused = admit(old, #key + #new, #new)
  if refused then
    undo()
    return refused
  end
  -- INCRBY kept the key's native TTL, and its expiry entry stays.
  redis.call('ZADD', index, 0, key)
  redis.call('HSET', sizes, key, #key + #new)
  redis.call('INCRBY', used, #key + #new - old)
  return {'i', new}
elseif op == 'cas' then
  -- ARGV[6]: '1' if ARGV[7] is the expected value ('0': the key is expected absent);
  -- ARGV[8]: the new value, written without a TTL.
  local matches
  if ARGV[6] == '1' then matches = value == ARGV[7] else matches = not value end
  if not matches then return {'b', 0} end
  local new = ARGV[8]
  local refused = admit(old, #key + #new, #new)
  if refused then return refused end
  put(new, nil, old)
  return {'b', 1}
elseif op == 'expire' then
  -- ARGV[6]: TTL in ms ('' removes it).
  if not value then return {'b', 0} end
  local until_ms = expiry(ARGV[6])
  if until_ms then
    redis.call('PEXPIREAT', vkey, ms(until_ms))
    redis.call('ZADD', expiries, ms(until_ms), key)
  else
    redis.call('PERSIST', vkey)
    redis.call('ZREM', expiries, key)
  end
  return {'b', 1}
elseif op == 'ttl' then
  if not value then return {'t', -2} end
  if not at then return {'t', -1} end
  return {'t', at - now}
end
return redis.error_reply('unknown state operation ' .. op)
