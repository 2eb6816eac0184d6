// `sandport.js`: contract sandport:plugin@0.2.0 (wit/v0.2/) for JavaScript plugins, idiomatically.
//
// This module owns the JavaScript face of the host's state and messaging imports: it wraps the
// modules componentize-js generates for them (`wasi:keyvalue/store@0.2.0-draft2`,
// `wasi:keyvalue/atomics@0.2.0-draft2`, `sandport:plugin/expiry@0.2.0`,
// `sandport:plugin/messaging@0.2.0`), turns their thrown `err` payloads into `SandportError`s
// that carry the host's reason, and takes strings wherever the host wants bytes. build.sh copies
// it next to the source of every 0.2 plugin; import it from there:
//
//   import { bucket, join, publish, send } from './sandport.js';
//
//   const kv = bucket();                  // the plugin's own namespace ("default")
//   kv.set('greeting', 'hello');          // strings are encoded as UTF-8; Uint8Array as it is
//   kv.getString('greeting');             // 'hello'; undefined when absent (get: the bytes)
//   kv.incr('hits');                      // 1n, 2n, ...: atomic across every connection
//   kv.close();                           // or `using kv = bucket()` where supported
//   send(otherId, 'hi');                  // to another connection, by id
//   join(conn, 'lobby');
//   publish(conn, 'lobby', 'hello all');  // to the room's other members
//
// Connection ids, integers and TTLs are BigInts (WIT u64/s64); a Number is accepted as an
// argument. Every failing call throws a `SandportError` (`kind`: the WIT error case, `reason`:
// the host's words): a quota, a store past the call's deadline, or a value `incr` cannot parse
// is an error the handler can catch, not a trap. Nothing here may run at the module's top level
// (build time, inside wizer: there is no host then).
import { open } from 'wasi:keyvalue/store@0.2.0-draft2';
import { increment, swap, Cas } from 'wasi:keyvalue/atomics@0.2.0-draft2';
import { setWithTtl, expire as expireKey, ttl as keyTtl } from 'sandport:plugin/expiry@0.2.0';
import * as messaging from 'sandport:plugin/messaging@0.2.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // invalid UTF-8 becomes U+FFFD
// How the bindings' resources are given back to the host, as the bindings spell it.
const DISPOSE = Symbol.dispose ?? Symbol.for('dispose');

/** A string as UTF-8; a Uint8Array (or an array of bytes) as it is. */
function toBytes(value) {
  if (typeof value === 'string') return encoder.encode(value);
  return value instanceof Uint8Array ? value : Uint8Array.from(value);
}

/** A state or messaging call the host refused. */
export class SandportError extends Error {
  /**
   * @param {string} kind the WIT error case: `no-such-store`, `access-denied`, `other`,
   *   `unknown-connection`, `too-many-rooms`, `bad-room-name`
   * @param {string} reason the host's words (for `other`), else what the case means
   */
  constructor(kind, reason) {
    super(reason);
    this.name = 'SandportError';
    this.kind = kind;
    this.reason = reason;
  }
}

// What each error case without words of the host's means, in the words of the Rust SDK's.
const REASONS = {
  'no-such-store': 'no such store',
  'access-denied': 'access to the store denied',
  'unknown-connection': 'no open connection has this id',
  'too-many-rooms': 'the connection is in too many rooms',
  'bad-room-name': 'a room name must be 1 to 256 bytes',
};

/** The SandportError for an error the bindings threw (a ComponentError with a `payload`). */
function fromThrown(e) {
  if (e === null || typeof e !== 'object' || !('payload' in e)) return e;
  const payload = e.payload;
  // A messaging error is an enum case (a string), a store error a variant ({ tag, val }).
  const kind = typeof payload === 'string' ? payload : payload?.tag;
  if (typeof kind !== 'string') return e;
  if (kind === 'other') return new SandportError(kind, payload.val);
  return new SandportError(kind, REASONS[kind] ?? kind);
}

/** Runs `f`, rethrowing an error of the host's as a SandportError. */
function call(f) {
  try {
    return f();
  } catch (e) {
    throw fromThrown(e);
  }
}

// --- state -----------------------------------------------------------------------------------

/**
 * Opens a bucket: `default` is the plugin's own namespace, any other name a namespace the
 * operator shares with `--shared-state NAME=PLUGIN,...`.
 */
export function bucket(name = 'default') {
  return new Bucket(call(() => open(name)));
}

/**
 * A namespace of the host's state store: byte values under string keys, every operation atomic
 * on its key and seen at once by every connection, worker and instance.
 */
export class Bucket {
  #handle;

  constructor(handle) {
    this.#handle = handle;
  }

  get #h() {
    if (this.#handle === undefined) throw new TypeError('the bucket is closed');
    return this.#handle;
  }

  /** Gives the handle back to the host (else it goes with the instance). */
  close() {
    if (this.#handle !== undefined) {
      this.#handle[DISPOSE]();
      this.#handle = undefined;
    }
  }

  [DISPOSE]() {
    this.close();
  }

  /** The value as bytes (a Uint8Array), `undefined` when the key is absent (or expired). */
  get(key) {
    return call(() => this.#h.get(key)) ?? undefined;
  }

  /** The value decoded as UTF-8, `undefined` when the key is absent. */
  getString(key) {
    const value = this.get(key);
    return value === undefined ? undefined : decoder.decode(value);
  }

  /**
   * Sets the value (a string or bytes); it expires in `ttlMs` when given, never otherwise (a TTL
   * the key had is cleared, as with Redis `SET`).
   */
  set(key, value, ttlMs = undefined) {
    if (ttlMs === undefined || ttlMs === null) {
      call(() => this.#h.set(key, toBytes(value)));
    } else {
      this.setWithTtl(key, value, ttlMs);
    }
  }

  /** Sets the value and makes it expire in `ttlMs` milliseconds (at least 1). */
  setWithTtl(key, value, ttlMs) {
    call(() => setWithTtl(this.#h, key, toBytes(value), BigInt(ttlMs)));
  }

  /** Removes the key; an absent key is not an error. */
  delete(key) {
    call(() => this.#h.delete(key));
  }

  exists(key) {
    return call(() => this.#h.exists(key));
  }

  /** Every key, in byte order, fetched a page (up to 1,000 keys) at a time. */
  *keys() {
    let cursor;
    do {
      const page = call(() => this.#h.listKeys(cursor));
      yield* page.keys;
      cursor = page.cursor ?? undefined;
    } while (cursor !== undefined);
  }

  /**
   * Adds `delta` (default 1) to the key's decimal integer (an absent key counts as 0) and
   * returns the new value as a BigInt, atomically (Redis `INCRBY`); a TTL the key has is kept.
   * A value that is not a decimal 64-bit integer, or an overflow, throws with the host's reason.
   */
  incr(key, delta = 1n) {
    return call(() => increment(this.#h, key, BigInt(delta)));
  }

  /**
   * Sets the key to `next` only if it holds `expected` (`undefined` or `null`: only if it is
   * absent); whether it did. Atomic: a change by anyone in between makes it return false. Clears
   * a TTL the key had.
   */
  cas(key, expected, next) {
    const want = expected === undefined || expected === null ? undefined : toBytes(expected);
    const handle = call(() => Cas.new(this.#h, key));
    let current;
    try {
      current = call(() => handle.current()) ?? undefined;
    } catch (e) {
      handle[DISPOSE]();
      throw e;
    }
    if (!sameBytes(current, want)) {
      handle[DISPOSE]();
      return false;
    }
    // `swap` takes the handle over, whatever its outcome.
    try {
      swap(handle, toBytes(next));
      return true;
    } catch (e) {
      const failure = e && e.payload;
      if (failure && failure.tag === 'cas-failed') {
        failure.val[DISPOSE]();
        return false;
      }
      if (failure && failure.tag === 'store-error') throw fromThrown({ payload: failure.val });
      throw e;
    }
  }

  /**
   * Makes the key expire in `ttlMs` milliseconds (at least 1), or never (`undefined`/`null`);
   * whether the key exists.
   */
  expire(key, ttlMs) {
    const ms = ttlMs === undefined || ttlMs === null ? undefined : BigInt(ttlMs);
    return call(() => expireKey(this.#h, key, ms));
  }

  /**
   * Milliseconds (a BigInt) until the key expires; `null` when it never does; `undefined` when
   * the key is absent.
   */
  ttl(key) {
    const answer = call(() => keyTtl(this.#h, key));
    if (answer.tag === 'remaining') return answer.val;
    if (answer.tag === 'persistent') return null;
    return undefined;
  }
}

function sameBytes(a, b) {
  if (a === undefined || b === undefined) return a === b;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// --- messaging -------------------------------------------------------------------------------

/**
 * Sends `message` (a string or bytes) to connection `to`, framed as a reply, after what was sent
 * to it before. Throws `unknown-connection` when it is not open.
 */
export function send(to, message) {
  call(() => messaging.send(BigInt(to), toBytes(message)));
}

/** Closes connection `conn` once what is queued for it is written. */
export function close(conn) {
  call(() => messaging.close(BigInt(conn)));
}

/** Connection `conn`'s addresses `{ id, peer, local }`, `undefined` when it is not open. */
export function connectionInfo(conn) {
  return messaging.connectionInfo(BigInt(conn)) ?? undefined;
}

/**
 * Connection `conn` joins `room` (joining twice is not an error). Throws `too-many-rooms` or
 * `bad-room-name` (1 to 256 bytes) when it cannot.
 */
export function join(conn, room) {
  call(() => messaging.join(BigInt(conn), room));
}

/** Connection `conn` leaves `room`; whether it was in it. */
export function leave(conn, room) {
  return messaging.leave(BigInt(conn), room);
}

/** The ids (BigInts) of `room`'s members, ascending (empty for an unknown room). */
export function members(room) {
  return Array.from(messaging.members(room));
}

/**
 * Sends `message` to every member of `room` but `sender` (unless `includeSender`); how many it
 * was sent to.
 */
export function publish(sender, room, message, includeSender = false) {
  return messaging.publish(BigInt(sender), room, toBytes(message), includeSender);
}
