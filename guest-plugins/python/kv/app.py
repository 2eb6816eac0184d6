"""`kv` in Python: a line-protocol key-value store, one store per connection.

Commands (one per message; every reply is one line):

    SET key value...   -> OK            (the value is everything after the key, spaces included)
    GET key            -> the value, or NOT_FOUND
    DEL key            -> 1 if the key existed, else 0
    KEYS               -> the keys, sorted, separated by single spaces (an empty line if none)
    anything else      -> ERR unknown command   (a normal reply: the connection stays open)

The store lives in the plugin instance's memory, so how long it lasts depends on the host's
`--isolation`: run it with `--isolation connection` (one instance per connection, so one store
per connection, dropped with the connection). Under `--isolation message` (the default) every
message gets a fresh instance and nothing set survives to the next message. Under
`--isolation worker` one instance serves every connection on a worker thread; the stores are
keyed by connection id, so connections still do not see each other's keys.

Built with componentize-py (see ../build.sh); `wit_world` is generated from wit/handler.wit at
build time.
"""

import wit_world
from wit_world import log
from wit_world.imports.types import Connection, Level, Response

# Connection id -> that connection's store. Module-level state lives as long as the instance.
STORES: dict[int, dict[str, str]] = {}


def handle(store: dict[str, str], line: str) -> str:
    """Runs one command against `store`; returns the reply line."""
    # Split off the command and the key only: the value keeps its inner spaces.
    parts = line.split(" ", 2)
    command = parts[0]
    if command == "SET" and len(parts) == 3 and parts[1]:
        store[parts[1]] = parts[2]
        return "OK"
    if command == "GET" and len(parts) == 2 and parts[1]:
        return store.get(parts[1], "NOT_FOUND")
    if command == "DEL" and len(parts) == 2 and parts[1]:
        return "1" if store.pop(parts[1], None) is not None else "0"
    if command == "KEYS" and len(parts) == 1:
        return " ".join(sorted(store))
    return "ERR unknown command"


class WitWorld(wit_world.WitWorld):
    def on_connect(self, conn: Connection) -> Response:
        # No greeting: the client speaks first.
        return Response(reply=None, close=False)

    def on_message(self, conn: Connection, message: bytes) -> Response:
        line = message.decode("utf-8", errors="replace").removesuffix("\r")
        answer = handle(STORES.setdefault(conn.id, {}), line)
        command = line.split(" ", 1)[0]
        log(Level.DEBUG, f"conn {conn.id}: {command[:16]} -> {answer[:32]}")
        return Response(reply=answer.encode("utf-8"), close=False)

    def on_disconnect(self, conn: Connection) -> None:
        # Forget the connection's keys (matters under `--isolation worker`).
        STORES.pop(conn.id, None)
