// `upper` in JavaScript: replies every message upper-cased, prefixed by the `prefix` setting.
//
// Built with componentize-js (see ../build.sh) into a component implementing the `handler` world
// of sandport's wit/handler.wit. How the WIT maps to JavaScript:
// - the world's imports are modules named after them, each with one default export:
//   `log` and `config-get`;
// - the exports are exported functions in camelCase: onConnect, onMessage, onDisconnect;
// - `connection` is an object {id (a BigInt: u64), peer, local}, `list<u8>` a Uint8Array,
//   `option<T>` undefined (or null) / a value, an enum (`level`) its case name as a string;
// - `result<response, string>`: return the response for `ok`; throw to return `err` (the host
//   then counts an error and closes the connection, or drops the message with --on-error drop).
import log from 'log';
import configGet from 'config-get';

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // invalid UTF-8 becomes U+FFFD

// No greeting: the client speaks first.
export function onConnect(_conn) {
  return { reply: undefined, close: false };
}

export function onMessage(conn, message) {
  // Read on every call: under --isolation message every call gets a fresh instance anyway.
  const prefix = configGet('prefix') ?? '';
  const text = decoder.decode(message).toUpperCase();
  log('debug', `conn ${conn.id}: upper-cased ${message.length} bytes`);
  return { reply: encoder.encode(prefix + text), close: false };
}

// Nothing to clean up.
export function onDisconnect(_conn) {}
