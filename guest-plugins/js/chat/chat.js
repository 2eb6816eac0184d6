// `chat` in JavaScript: named clients talking in rooms, one line per message.
//
// The protocol (the same as every sandport chat example, replies and notices word for word):
//   on connect          -> welcome guest<ID>       (ID: the connection id; that is the name)
//   /nick NAME          -> you are NAME
//   /join ROOM          -> joined ROOM; the old room's members get `* NAME left OLD`, the new
//                          room's other members `* NAME joined ROOM` (joining the room one is in
//                          leaves and joins it again); a room the host refuses gets
//                          `cannot join ROOM: KIND` (`bad-room-name`, `too-many-rooms`)
//   /who                -> the room's member names, sorted in byte order, separated by spaces
//   any other line      -> no reply; the room's other members get `NAME: line`
//   (not in a room)     -> `join a room first`, for /who and for lines
//   on disconnect       -> the room's other members get `* NAME left ROOM`
// `/nick` and `/join` without an argument are ordinary lines.
//
// Contract sandport:plugin@0.2.0. Under the default `--isolation message` every call runs on a
// fresh instance, so nothing is kept in memory: a connection's name and room live in the host's
// state (`conn:<ID>:name`, `conn:<ID>:room`), and rooms are the host's (`messaging`), which
// reach the connections of every worker. Built with componentize-js (see ../build.sh), which
// copies ../sandport.js next to this file.
import log from 'log';
import { bucket, join, leave, members, publish, SandportError } from './sandport.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // invalid UTF-8 becomes U+FFFD

const nameKey = (conn) => `conn:${conn}:name`;
const roomKey = (conn) => `conn:${conn}:room`;

/** Compares strings by their UTF-8 bytes, as Python's and Rust's sorts do (a plain sort() compares
 * UTF-16 code units, which differs for characters beyond U+FFFF). */
function byteOrder(a, b) {
  const [x, y] = [encoder.encode(a), encoder.encode(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

function response(line) {
  return { reply: line === undefined ? undefined : encoder.encode(line), close: false };
}

/** The argument of `/command ARG` (trimmed), or undefined when `line` is not that command. */
function argument(line, command) {
  if (!line.startsWith(`${command} `)) return undefined;
  const arg = line.slice(command.length + 1).trim();
  return arg === '' ? undefined : arg;
}

/** Runs one line from `conn`; returns the reply, if any. */
function handle(kv, conn, line) {
  const name = kv.getString(nameKey(conn)) ?? `guest${conn}`;
  const room = kv.getString(roomKey(conn));

  const nick = argument(line, '/nick');
  if (nick !== undefined) {
    kv.set(nameKey(conn), nick);
    return `you are ${nick}`;
  }

  const target = argument(line, '/join');
  if (target !== undefined) {
    if (room !== undefined) {
      leave(conn, room);
      kv.delete(roomKey(conn));
      publish(conn, room, `* ${name} left ${room}`);
    }
    try {
      join(conn, target);
    } catch (e) {
      if (e instanceof SandportError) return `cannot join ${target}: ${e.kind}`;
      throw e;
    }
    kv.set(roomKey(conn), target);
    publish(conn, target, `* ${name} joined ${target}`);
    return `joined ${target}`;
  }

  if (room === undefined) return 'join a room first';

  if (line === '/who') {
    const names = members(room).map((id) => kv.getString(nameKey(id)) ?? `guest${id}`);
    return names.sort(byteOrder).join(' ');
  }

  publish(conn, room, `${name}: ${line}`);
  return undefined;
}

// `async` to show that an export may return a promise: the glue awaits it (the tests check the
// welcome line, so they check that path). A handler that returns a plain value is not awaited.
export async function onConnect(conn) {
  const name = `guest${conn.id}`;
  const kv = bucket();
  try {
    kv.set(nameKey(conn.id), name);
    // A state file may hold a room from a process that was killed: ids restart at 1.
    kv.delete(roomKey(conn.id));
  } finally {
    kv.close();
  }
  return response(`welcome ${name}`);
}

export function onMessage(conn, message) {
  let line = decoder.decode(message);
  if (line.endsWith('\r')) line = line.slice(0, -1);
  let kv;
  let answer;
  try {
    kv = bucket();
    answer = handle(kv, conn, line);
  } catch (e) {
    // A store that cannot answer: an `err` the host logs (and closes the connection on).
    // A thrown string is an `err`; a thrown Error would be a trap.
    if (e instanceof SandportError) throw `chat: ${e.reason}`;
    throw e;
  } finally {
    kv?.close();
  }
  log('debug', `conn ${conn}: ${JSON.stringify(line.slice(0, 16))} -> ${JSON.stringify((answer ?? '').slice(0, 32))}`);
  return response(answer);
}

export function onDisconnect(conn) {
  // The host has taken the connection out of its rooms already; tell the others.
  const kv = bucket();
  try {
    const name = kv.getString(nameKey(conn)) ?? `guest${conn}`;
    const room = kv.getString(roomKey(conn));
    if (room !== undefined) publish(conn, room, `* ${name} left ${room}`);
    kv.delete(roomKey(conn));
    kv.delete(nameKey(conn));
  } finally {
    kv.close();
  }
}
