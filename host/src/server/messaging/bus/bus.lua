-- The cross-host messaging bus's Redis side (see bus.rs): which host is alive, and who is in
-- each room on which host. One script, so every step below is atomic for all hosts at once.
--
-- ARGV[1] the operation, ARGV[2] this host's tag; the rest by operation. Keys (a single Redis,
-- as the state backend): sandport:host:TAG (alive while it exists; its value the host's nonce),
-- sandport:host:TAG:m (the host's memberships, "ID ROOM"), sandport:room:ROOM:m (the room's
-- member ids), sandport:room:ROOM:h (members per host tag: publish's count).
-- Ids are decimal strings below 2^53, so Lua's doubles hold them exactly; their tag is id / 2^40.

local op, tag = ARGV[1], ARGV[2]
local TAG_SHIFT = 1099511627776 -- 2^40

local function host_key(t) return 'sandport:host:' .. t end
local function members_key(room) return 'sandport:room:' .. room .. ':m' end
local function hosts_key(room) return 'sandport:room:' .. room .. ':h' end
local function tag_of(id) return tostring(math.floor(tonumber(id) / TAG_SHIFT)) end

local function add(t, room, id)
  if redis.call('SADD', members_key(room), id) == 1 then
    redis.call('HINCRBY', hosts_key(room), t, 1)
  end
  redis.call('SADD', host_key(t) .. ':m', id .. ' ' .. room)
end

local function remove(t, room, id)
  if redis.call('SREM', members_key(room), id) == 1 then
    if redis.call('HINCRBY', hosts_key(room), t, -1) <= 0 then
      redis.call('HDEL', hosts_key(room), t)
    end
  end
  redis.call('SREM', host_key(t) .. ':m', id .. ' ' .. room)
end

-- The host's memberships expire with its heartbeat: a dead host's are of no use to anyone.
local function keep(t)
  local ttl = redis.call('PTTL', host_key(t))
  if ttl > 0 then
    redis.call('PEXPIRE', host_key(t) .. ':m', ttl)
  end
end

-- Whether host `t` is alive, asked once per call.
local alive_cache = {}
local function alive(t)
  if alive_cache[t] == nil then
    alive_cache[t] = redis.call('EXISTS', host_key(t)) == 1
  end
  return alive_cache[t]
end

-- Drops the members of dead host `t` from `room` (its process is gone: kill -9, a lost machine).
local function prune(room, t)
  for _, id in ipairs(redis.call('SMEMBERS', members_key(room))) do
    if tag_of(id) == t then
      redis.call('SREM', members_key(room), id)
    end
  end
  redis.call('HDEL', hosts_key(room), t)
end

if op == 'beat' then
  -- ARGV[3] nonce, ARGV[4] ttl ms: keeps the tag (1) or claims it (2: its memberships may be
  -- gone with it, or pruned meanwhile); 0 when another host holds it.
  local holder = redis.call('GET', host_key(tag))
  if holder and holder ~= ARGV[3] then
    return 0
  end
  redis.call('SET', host_key(tag), ARGV[3], 'PX', ARGV[4])
  redis.call('PEXPIRE', host_key(tag) .. ':m', ARGV[4])
  if holder then
    return 1
  end
  return 2
elseif op == 'join' then
  add(tag, ARGV[4], ARGV[3])
  keep(tag)
  return 1
elseif op == 'leave' then
  remove(tag, ARGV[4], ARGV[3])
  return 1
elseif op == 'sync' then
  -- ARGV[3..]: every "ID ROOM" the host has now; what Redis holds besides goes, what it lacks
  -- comes (after Redis lost writes: a restart, or the host's heartbeat expiring meanwhile).
  local want = {}
  for i = 3, #ARGV do
    want[ARGV[i]] = true
  end
  for _, entry in ipairs(redis.call('SMEMBERS', host_key(tag) .. ':m')) do
    if not want[entry] then
      local space = string.find(entry, ' ', 1, true)
      remove(tag, string.sub(entry, space + 1), string.sub(entry, 1, space - 1))
    end
  end
  for i = 3, #ARGV do
    local entry = ARGV[i]
    local space = string.find(entry, ' ', 1, true)
    add(tag, string.sub(entry, space + 1), string.sub(entry, 1, space - 1))
  end
  keep(tag)
  return 1
elseif op == 'members' then
  -- ARGV[3] the room: the ids of its members on other live hosts.
  local room = ARGV[3]
  local out, dead = {}, {}
  for _, id in ipairs(redis.call('SMEMBERS', members_key(room))) do
    local t = tag_of(id)
    if t ~= tag then
      if alive(t) then
        out[#out + 1] = id
      else
        dead[t] = true
      end
    end
  end
  for t in pairs(dead) do
    prune(room, t)
  end
  return out
elseif op == 'publish' then
  -- ARGV[3] the room, ARGV[4] the payload: sent to every host, which fans it out to its own
  -- members; returns the members on the other live hosts.
  local room = ARGV[3]
  local count, dead = 0, {}
  local per_host = redis.call('HGETALL', hosts_key(room))
  for i = 1, #per_host, 2 do
    local t = per_host[i]
    if t ~= tag then
      if alive(t) then
        count = count + tonumber(per_host[i + 1])
      else
        dead[#dead + 1] = t
      end
    end
  end
  for _, t in ipairs(dead) do
    prune(room, t)
  end
  redis.call('PUBLISH', 'sandport:room:' .. room, ARGV[4])
  return count
end
return redis.error_reply('unknown bus operation ' .. tostring(op))
