// `router` in JavaScript: validates JSON messages and accepts those addressed to a known route.
//
// Every message must be a JSON object with a string field `route`, one of the routes listed in
// the `routes` setting (comma-separated; default `orders,users`):
//   sandport --plugin router-js.wasm --config router-js.routes=orders,users,payments
// Every message gets one line of JSON back, and the connection stays open whatever it sent:
//   accepted:              {"route":"orders","accepted":true,"bytes":<message length in bytes>}
//   not JSON:              {"error":"invalid JSON: <what the parser said>"}
//   no string `route`:     {"error":"missing route"}      (also for JSON that is not an object)
//   route not allowed:     {"error":"unknown route: <route>"}
// Each rejection is also logged at warn level.
//
// Built with componentize-js (see ../build.sh and the notes at the top of ../upper/upper.js).
import log from 'log';
import configGet from 'config-get';

const DEFAULT_ROUTES = 'orders,users';

const encoder = new TextEncoder();
// fatal: bytes that are not UTF-8 are a parse error rather than silently replaced.
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The allowed routes, from the `routes` setting (read on every call: instances may be fresh). */
function allowedRoutes() {
  const setting = configGet('routes') ?? DEFAULT_ROUTES;
  return new Set(setting.split(',').map((r) => r.trim()).filter((r) => r !== ''));
}

/** Returns [reply object, rejection reason or null]. */
function route(message) {
  let value;
  try {
    value = JSON.parse(decoder.decode(message));
  } catch (e) {
    const detail = e instanceof TypeError ? 'message is not valid UTF-8' : String(e.message ?? e);
    return [{ error: `invalid JSON: ${detail}` }, 'invalid JSON'];
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)
      || typeof value.route !== 'string') {
    return [{ error: 'missing route' }, 'missing route'];
  }
  if (!allowedRoutes().has(value.route)) {
    return [{ error: `unknown route: ${value.route}` }, 'unknown route'];
  }
  return [{ route: value.route, accepted: true, bytes: message.length }, null];
}

export function onConnect(_conn) {
  return { reply: undefined, close: false };
}

export function onMessage(conn, message) {
  const [reply, rejected] = route(message);
  const line = JSON.stringify(reply);
  if (rejected !== null) {
    log('warn', `conn ${conn.id}: rejected (${rejected}): ${line}`);
  } else {
    log('debug', `conn ${conn.id}: accepted route ${reply.route} (${message.length} bytes)`);
  }
  return { reply: encoder.encode(line), close: false };
}

export function onDisconnect(_conn) {}
