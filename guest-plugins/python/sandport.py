"""`sandport`: contract sandport:plugin@0.2.0 (wit/v0.2/) for Python plugins, idiomatically.

This module owns the Python face of the host's state and messaging imports: it wraps the
bindings componentize-py generates (`wit_world.imports.store`, `atomics`, `expiry`,
`messaging`), turns their `Err` results into exceptions that carry the host's reason, and takes
`str` wherever the host wants bytes. build.sh copies it next to the `app.py` of every 0.2
plugin; import it from there:

    import sandport

    with sandport.bucket() as kv:            # the plugin's own namespace ("default")
        kv.set("greeting", "hello")            # str is encoded as UTF-8; bytes go as they are
        kv.get("greeting")                     # b"hello"; None when absent
        kv.incr("hits")                        # 1, 2, ...: atomic across every connection
    sandport.send(other_id, "hi")              # to another connection, by id
    sandport.join(conn, "lobby")
    sandport.publish(conn, "lobby", "hello all")  # to the room's other members

State calls raise `StateError`, messaging calls `MessagingError`, both `SandportError`: a quota,
a store past the call's deadline or a value `incr` cannot parse is an exception the handler can
answer, not a trap. Nothing here may be called at module level (build time: there is no host).
"""

from typing import Iterator, Optional, Union

from componentize_py_types import Err
from wit_world.imports import atomics as _atomics
from wit_world.imports import expiry as _expiry
from wit_world.imports import messaging as _messaging
from wit_world.imports import store as _store
from wit_world.imports.types import Connection

__all__ = [
    "Bucket",
    "Connection",
    "MessagingError",
    "SandportError",
    "StateError",
    "bucket",
    "close",
    "connection_info",
    "join",
    "leave",
    "members",
    "publish",
    "send",
]

Bytes = Union[bytes, bytearray, memoryview, str]


def _bytes(value: Bytes) -> bytes:
    """`str` as UTF-8, any bytes-like as `bytes`."""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


class SandportError(Exception):
    """A state or messaging call the host refused. `kind` names the WIT error case, such as
    `other` or `unknown-connection`; `reason` is the host's words for `other`, else what the
    case means (`no open connection has this id`)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class StateError(SandportError):
    """A `wasi:keyvalue` error: `no-such-store`, `access-denied`, or `other` with the host's
    reason (the store is unavailable, a quota would be exceeded, a value is not an integer)."""


class MessagingError(SandportError):
    """A `messaging` error: `unknown-connection`, `too-many-rooms` or `bad-room-name`."""


def _state_error(err: Err) -> StateError:
    value = err.value
    if isinstance(value, _store.Error_Other):
        return StateError("other", value.value)
    if isinstance(value, _store.Error_AccessDenied):
        return StateError("access-denied", "access to the store denied")
    return StateError("no-such-store", "no such store")


# What each messaging error means, in the words of the Rust SDK's.
_MESSAGING_REASONS = {
    "unknown-connection": "no open connection has this id",
    "too-many-rooms": "the connection is in too many rooms",
    "bad-room-name": "a room name must be 1 to 256 bytes",
}


def _messaging_error(err: Err) -> MessagingError:
    kind = err.value.name.lower().replace("_", "-")
    return MessagingError(kind, _MESSAGING_REASONS.get(kind, kind))


def _state(call, *args):
    """Runs one state import, raising `StateError` for its `Err`."""
    try:
        return call(*args)
    except Err as e:
        raise _state_error(e) from None


def _messaging_call(call, *args):
    """Runs one messaging import, raising `MessagingError` for its `Err`."""
    try:
        return call(*args)
    except Err as e:
        raise _messaging_error(e) from None


# --- state ----------------------------------------------------------------------------------


def bucket(name: str = "default") -> "Bucket":
    """Opens a bucket: `default` is the plugin's own namespace, any other name a namespace the
    operator shares with `--shared-state NAME=PLUGIN,...`."""
    return Bucket(_state(_store.open, name))


class Bucket:
    """A namespace of the host's state store: bytes values under `str` keys, every operation
    atomic on its key and seen at once by every connection, worker and instance.

    Also a small mapping: `b[key]` (KeyError when absent), `b[key] = value`, `del b[key]`,
    `key in b`, `iter(b)` (the keys, in byte order). A context manager too: `with` gives the
    handle back to the host at the end (otherwise it goes when the object is collected, or with
    the instance)."""

    def __init__(self, handle: _store.Bucket) -> None:
        self._handle = handle

    def __enter__(self) -> "Bucket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Gives the handle back to the host; the bucket cannot be used after."""
        if self._handle is not None:
            self._handle.__exit__(None, None, None)
            self._handle = None

    @property
    def _h(self) -> _store.Bucket:
        if self._handle is None:
            raise ValueError("the bucket is closed")
        return self._handle

    # Reads and writes.

    def get(self, key: str, default: Optional[bytes] = None) -> Optional[bytes]:
        """The value, or `default` when the key is absent (or expired)."""
        value = _state(self._h.get, key)
        return default if value is None else value

    def set(self, key: str, value: Bytes, ttl_ms: Optional[int] = None) -> None:
        """Sets the value; it expires in `ttl_ms` when given, never otherwise (a TTL the key had
        is cleared, as with Redis `SET`)."""
        if ttl_ms is None:
            _state(self._h.set, key, _bytes(value))
        else:
            self.set_with_ttl(key, value, ttl_ms)

    def set_with_ttl(self, key: str, value: Bytes, ttl_ms: int) -> None:
        """Sets the value and makes it expire in `ttl_ms` milliseconds (at least 1)."""
        _state(_expiry.set_with_ttl, self._h, key, _bytes(value), ttl_ms)

    def delete(self, key: str) -> None:
        """Removes the key; an absent key is not an error."""
        _state(self._h.delete, key)

    def exists(self, key: str) -> bool:
        return _state(self._h.exists, key)

    def keys(self) -> Iterator[str]:
        """Every key, in byte order, fetched a page (up to 1,000 keys) at a time."""
        cursor = None
        while True:
            page = _state(self._h.list_keys, cursor)
            yield from page.keys
            cursor = page.cursor
            if cursor is None:
                return

    # Atomics.

    def incr(self, key: str, delta: int = 1) -> int:
        """Adds `delta` to the key's decimal integer (an absent key counts as 0) and returns the
        new value, atomically (Redis `INCRBY`); a TTL the key has is kept. A value that is not
        a decimal 64-bit integer, or an overflow, raises `StateError` with the host's reason."""
        return _state(_atomics.increment, self._h, key, delta)

    def cas(self, key: str, expected: Optional[Bytes], new: Bytes) -> bool:
        """Sets the key to `new` only if it holds `expected` (`None`: only if it is absent);
        whether it did. Atomic: a change by anyone in between makes it return False. Clears a
        TTL the key had."""
        want = None if expected is None else _bytes(expected)
        handle = _state(_atomics.Cas.new, self._h, key)
        try:
            if _state(handle.current) != want:
                handle.__exit__(None, None, None)
                return False
        except StateError:
            handle.__exit__(None, None, None)
            raise
        # `swap` takes the handle over, whatever its outcome.
        try:
            _atomics.swap(handle, _bytes(new))
        except Err as e:
            failure = e.value
            if isinstance(failure, _atomics.CasError_CasFailed):
                failure.value.__exit__(None, None, None)
                return False
            raise _state_error(Err(failure.value)) from None
        return True

    # Expiry.

    def expire(self, key: str, ttl_ms: Optional[int]) -> bool:
        """Makes the key expire in `ttl_ms` milliseconds (at least 1), or never (`None`);
        whether the key exists."""
        return _state(_expiry.expire, self._h, key, ttl_ms)

    def ttl(self, key: str) -> Optional[int]:
        """Milliseconds until the key expires; `None` when it never does. KeyError when the key
        is absent."""
        answer = _state(_expiry.ttl, self._h, key)
        if isinstance(answer, _expiry.TimeToLive_Remaining):
            return answer.value
        if isinstance(answer, _expiry.TimeToLive_Persistent):
            return None
        raise KeyError(key)

    # The mapping protocol.

    def __getitem__(self, key: str) -> bytes:
        value = _state(self._h.get, key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Bytes) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.exists(key)

    def __iter__(self) -> Iterator[str]:
        return self.keys()


# --- messaging ------------------------------------------------------------------------------


def send(to: int, message: Bytes) -> None:
    """Sends `message` to connection `to`, framed as a reply, after what was sent to it before.
    MessagingError `unknown-connection` when it is not open."""
    _messaging_call(_messaging.send, to, _bytes(message))


def close(conn: int) -> None:
    """Closes connection `conn` once what is queued for it is written."""
    _messaging_call(_messaging.close, conn)


def connection_info(conn: int) -> Optional[Connection]:
    """Connection `conn`'s addresses (`.id`, `.peer`, `.local`), `None` when it is not open."""
    return _messaging.connection_info(conn)


def join(conn: int, room: str) -> None:
    """Connection `conn` joins `room` (joining twice is not an error). MessagingError
    `too-many-rooms` or `bad-room-name` (1 to 256 bytes) when it cannot."""
    _messaging_call(_messaging.join, conn, room)


def leave(conn: int, room: str) -> bool:
    """Connection `conn` leaves `room`; whether it was in it."""
    return _messaging.leave(conn, room)


def members(room: str) -> list:
    """The ids of `room`'s members, ascending (empty for an unknown room)."""
    return list(_messaging.members(room))


def publish(sender: int, room: str, message: Bytes, include_sender: bool = False) -> int:
    """Sends `message` to every member of `room` but `sender` (unless `include_sender`); how
    many it was sent to."""
    return _messaging.publish(sender, room, _bytes(message), include_sender)
