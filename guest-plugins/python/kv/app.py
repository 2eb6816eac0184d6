"""`kv` in Python: a line-protocol key-value store in the host's state, shared by every client.

Commands (one per message; every reply is one line):

    SET key value...    -> OK           (the value is everything after the key, spaces included)
    GET key             -> the value, or (nil)
    DEL key             -> 1 if the key existed, else 0
    INCR key            -> the new integer (an absent key counts as 0), or ERR <the host's reason>
    SETNX key value...  -> 1 if the key was absent and is now set, else 0
    PEXPIRE key ms      -> 1 if the key exists and now expires in ms milliseconds, else 0
    PTTL key            -> milliseconds left, -1 if the key never expires, -2 if it is absent
    KEYS                -> the keys, sorted, separated by single spaces (an empty line if none)
    anything else       -> ERR unknown command   (a normal reply: the connection stays open)

A write the host refuses (a quota, a store past the call's deadline) is `ERR <the host's
reason>`, a normal reply too.

Contract sandport:plugin@0.2.0: the keys live in the plugin's own namespace of the host's state
store (`--state memory`, the default, or `--state file:PATH` to survive a restart), so every
connection, worker and instance sees the same store, under any `--isolation`. Built with
componentize-py (see ../build.sh), which copies ../sandport.py next to this file.
"""

import wit_world
from wit_world import log
from wit_world.imports.types import Connection, Level, Response

import sandport


def handle(kv: sandport.Bucket, line: str) -> str:
    """Runs one command on the store; returns the reply line."""
    # Split off the command and the key only: the value keeps its inner spaces.
    parts = line.split(" ", 2)
    command, args = parts[0], parts[1:]
    key = args[0] if args else ""
    try:
        if command == "SET" and len(args) == 2 and key:
            kv.set(key, args[1])
            return "OK"
        if command == "GET" and len(args) == 1 and key:
            value = kv.get(key)
            return "(nil)" if value is None else value.decode("utf-8", errors="replace")
        if command == "DEL" and len(args) == 1 and key:
            # wasi:keyvalue's delete does not say whether the key was there: ask first.
            existed = kv.exists(key)
            kv.delete(key)
            return "1" if existed else "0"
        if command == "INCR" and len(args) == 1 and key:
            return str(kv.incr(key))
        if command == "SETNX" and len(args) == 2 and key:
            return "1" if kv.cas(key, None, args[1]) else "0"
        if command == "PEXPIRE" and len(args) == 2 and key and args[1].isdigit():
            ms = int(args[1])
            if not 1 <= ms < 1 << 64:
                return "ERR invalid TTL (1 to 2^64-1 ms)"
            return "1" if kv.expire(key, ms) else "0"
        if command == "PTTL" and len(args) == 1 and key:
            try:
                ttl = kv.ttl(key)
            except KeyError:
                return "-2"
            return "-1" if ttl is None else str(ttl)
        if command == "KEYS" and not args:
            return " ".join(kv.keys())
    except sandport.StateError as e:
        return f"ERR {e.reason}"
    return "ERR unknown command"


class WitWorld(wit_world.WitWorld):
    def on_connect(self, conn: Connection) -> Response:
        # No greeting: the client speaks first.
        return Response(reply=None, close=False)

    def on_message(self, conn: int, message: bytes) -> Response:
        line = message.decode("utf-8", errors="replace").removesuffix("\r")
        with sandport.bucket() as kv:
            answer = handle(kv, line)
        command = line.split(" ", 1)[0]
        log(Level.DEBUG, f"conn {conn}: {command[:16]} -> {answer[:32]}")
        return Response(reply=answer.encode("utf-8"), close=False)

    def on_disconnect(self, conn: int) -> None:
        # The store outlives the connection: nothing to clean up.
        pass
