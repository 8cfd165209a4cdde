"""The Lua scripts of the Redis transport: the operations that must be atomic on the server."""

from __future__ import annotations

from typing import Final

__all__ = ["ADD_IF_ROOM", "DELETE_IF_EMPTY", "RELEASE_LEASE", "RENEW_LEASE", "REQUEUE"]

#: Deletes a worker stream only if it is empty, atomically: a dispatcher may be
#: adding to it at the same moment, and an entry added must not be lost.
#: KEYS[1]: the stream; KEYS[2]: the set of worker streams.
DELETE_IF_EMPTY: Final = """
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], KEYS[1])
  return 1
end
return 0
"""

#: Extends a lease only if its holder still holds it. KEYS[1]: the lease;
#: ARGV[1]: the holder; ARGV[2]: the new time to live in milliseconds.
RENEW_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: Deletes a lease only if its holder still holds it. KEYS[1]: the lease; ARGV[1]: the holder.
RELEASE_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS[1]: the stream; KEYS[2], if given: the set of worker streams, which gets
#: the stream once an entry is added (so that a departed worker's is adopted);
#: ARGV[1]: the most entries it may hold; ARGV[2]: the
#: field of a job entry; then, for each request in turn, its number of jobs
#: and the jobs. Each request is added whole if it fits, or not at all.
#: Returns the stream's length, then 1 or 0 for each request.
ADD_IF_ROOM: Final = """
local limit = tonumber(ARGV[1])
local field = ARGV[2]
local length = redis.call('XLEN', KEYS[1])
local before = length
local answers = {length}
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if length + n <= limit then
    for j = i + 1, i + n do
      redis.call('XADD', KEYS[1], '*', field, ARGV[j])
    end
    length = length + n
    answers[#answers + 1] = 1
  else
    answers[#answers + 1] = 0
  end
  i = i + n + 1
end
if KEYS[2] and length > before then
  redis.call('SADD', KEYS[2], KEYS[1])
end
answers[1] = length
return answers
"""

#: Gives entries back unstarted, each only if this consumer still holds it: the
#: entry is acknowledged and deleted, added again to its new stream with its
#: deliveries so far, and its move stored in its reply stream (the new id is
#: known only here, hence a script). KEYS, three per entry: its stream, the
#: stream it goes to, its reply stream (any key when it has none). ARGV[1..4]:
#: the group, the consumer, the fields of a job and of its attempts; ARGV[5]: the
#: reply stream's time to live (s); ARGV[6]: the field of an outcome; then four per
#: entry: its id, its deliveries so far, its payload, its job id ("" for no reply).
#: Returns 1 or 0 for each entry: given back, or not held by this consumer.
REQUEUE: Final = """
local group, consumer, job_field, attempts_field = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, outcome_field = ARGV[5], ARGV[6]
local answers = {}
for i = 1, #KEYS / 3 do
  local from, to, reply = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local a = 7 + 4 * (i - 1)
  local id, before, payload, job = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local held = redis.pcall('XPENDING', from, group, id, id, 1, consumer)
  if type(held) == 'table' and #held == 1 then
    redis.call('XACK', from, group, id)
    redis.call('XDEL', from, id)
    local new = redis.call('XADD', to, '*', attempts_field, before, job_field, payload)
    if job ~= '' then
      local move = cmsgpack.pack({tonumber(job), to, new})
      redis.call('XADD', reply, '*', outcome_field, move)
      redis.call('EXPIRE', reply, ttl)
    end
    answers[i] = 1
  else
    answers[i] = 0
  end
end
return answers
"""
