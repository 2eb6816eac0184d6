"""`chat` in Python: named clients talking in rooms, one line per message.

The protocol (the same as every sandport chat example, replies and notices word for word):

    on connect          -> welcome guest<ID>       (ID: the connection id; that is the name)
    /nick NAME          -> you are NAME
    /join ROOM          -> joined ROOM; the old room's members get `* NAME left OLD`, the new
                           room's other members `* NAME joined ROOM` (joining the room one is in
                           leaves and joins it again); a room the host refuses gets
                           `cannot join ROOM: KIND` (`bad-room-name`, `too-many-rooms`)
    /who                -> the room's member names, sorted in byte order, separated by spaces
    any other line      -> no reply; the room's other members get `NAME: line`
    (not in a room)     -> `join a room first`, for /who and for lines
    on disconnect       -> the room's other members get `* NAME left ROOM`

`/nick` and `/join` without an argument are ordinary lines.

Contract sandport:plugin@0.2.0. Under the default `--isolation message` every call runs on a
fresh instance, so nothing is kept in memory: a connection's name and room live in the host's
state (`conn:<ID>:name`, `conn:<ID>:room`), and rooms are the host's (`messaging`), which
reach the connections of every worker. Built with componentize-py (see ../build.sh), which
copies ../sandport.py next to this file.
"""

from typing import Optional

import wit_world
from componentize_py_types import Err
from wit_world import log
from wit_world.imports.types import Connection, Level, Response

import sandport


def name_key(conn: int) -> str:
    return f"conn:{conn}:name"


def room_key(conn: int) -> str:
    return f"conn:{conn}:room"


def text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("utf-8", errors="replace")


def reply(line: Optional[str]) -> Response:
    return Response(reply=None if line is None else line.encode("utf-8"), close=False)


def handle(kv: sandport.Bucket, conn: int, line: str) -> Optional[str]:
    """Runs one line from `conn`; returns the reply, if any."""
    name = text(kv.get(name_key(conn))) or f"guest{conn}"
    room = text(kv.get(room_key(conn)))

    if line.startswith("/nick ") and line[len("/nick ") :].strip():
        new = line[len("/nick ") :].strip()
        kv.set(name_key(conn), new)
        return f"you are {new}"

    if line.startswith("/join ") and line[len("/join ") :].strip():
        new = line[len("/join ") :].strip()
        if room is not None:
            sandport.leave(conn, room)
            kv.delete(room_key(conn))
            sandport.publish(conn, room, f"* {name} left {room}")
        try:
            sandport.join(conn, new)
        except sandport.MessagingError as e:
            return f"cannot join {new}: {e.kind}"
        kv.set(room_key(conn), new)
        sandport.publish(conn, new, f"* {name} joined {new}")
        return f"joined {new}"

    if room is None:
        return "join a room first"

    if line == "/who":
        names = [
            text(kv.get(name_key(member))) or f"guest{member}"
            for member in sandport.members(room)
        ]
        return " ".join(sorted(names))

    sandport.publish(conn, room, f"{name}: {line}")
    return None


class WitWorld(wit_world.WitWorld):
    def on_connect(self, conn: Connection) -> Response:
        name = f"guest{conn.id}"
        with sandport.bucket() as kv:
            kv.set(name_key(conn.id), name)
            # A state file may hold a room from a process that was killed: ids restart at 1.
            kv.delete(room_key(conn.id))
        return reply(f"welcome {name}")

    def on_message(self, conn: int, message: bytes) -> Response:
        line = message.decode("utf-8", errors="replace").removesuffix("\r")
        try:
            with sandport.bucket() as kv:
                answer = handle(kv, conn, line)
        except sandport.SandportError as e:
            # A store that cannot answer: an `err` the host logs (and closes the connection on).
            raise Err(f"chat: {e.reason}") from None
        log(Level.DEBUG, f"conn {conn}: {line[:16]!r} -> {(answer or '')[:32]!r}")
        return reply(answer)

    def on_disconnect(self, conn: int) -> None:
        # The host has taken the connection out of its rooms already; tell the others.
        with sandport.bucket() as kv:
            name = text(kv.get(name_key(conn))) or f"guest{conn}"
            room = text(kv.get(room_key(conn)))
            if room is not None:
                sandport.publish(conn, room, f"* {name} left {room}")
            kv.delete(room_key(conn))
            kv.delete(name_key(conn))
