// `upper` in AssemblyScript: replies every message upper-cased (Unicode rules, `straße` ->
// `STRASSE`), prefixed by the `prefix` setting if it is given
// (`--config upper-assemblyscript.prefix=">> "`), and logs a debug line
// "conn N: upper-cased M bytes".
//
// A plain core WebAssembly module implementing the sandport core-module ABI (docs/core-abi.md):
// no loader, no JS glue, no WASI. It exports no `sandport_on_connect` nor
// `sandport_on_disconnect`: the host accepts connections silently and has nothing to call when
// they close. Built by ../build.sh with `--use abort=index/onAbort`, so that AssemblyScript's
// usual `env.abort` import is replaced by `onAbort` below (the host refuses unknown imports).

// ---- The host's imports (module `sandport`) ----------------------------------------------------

@external("sandport", "log")
declare function hostLog(level: i32, ptr: usize, len: usize): void;

@external("sandport", "config_get")
declare function hostConfigGet(keyPtr: usize, keyLen: usize, outPtr: usize, outCap: usize): i32;

const DEBUG: i32 = 1;
const ERROR: i32 = 4;

/** Writes a line to the host's log, tagged by the host with the plugin and the connection. */
function log(level: i32, text: string): void {
  const bytes = String.UTF8.encode(text);
  hostLog(level, changetype<usize>(bytes), bytes.byteLength);
}

/** This plugin's `--config upper-assemblyscript.KEY=VALUE` setting, or null when not given. */
function configGet(key: string): string | null {
  const k = String.UTF8.encode(key);
  let buf = new ArrayBuffer(256);
  let n = hostConfigGet(changetype<usize>(k), k.byteLength, changetype<usize>(buf), buf.byteLength);
  if (n < 0) return null;
  if (n > buf.byteLength) {
    // Longer than the first buffer: ask again with room for all of it.
    buf = new ArrayBuffer(n);
    n = hostConfigGet(changetype<usize>(k), k.byteLength, changetype<usize>(buf), buf.byteLength);
  }
  return String.UTF8.decodeUnsafe(changetype<usize>(buf), <usize>n);
}

// ---- The ABI's plumbing ------------------------------------------------------------------------

/** What a hook returns a pointer to: flags, ptr, len (12 bytes, 4-byte aligned, static). */
const RESULT: usize = memory.data(12, 4);
/** Where 0-byte buffers point (never freed: the host frees only buffers with len > 0). */
const EMPTY: usize = memory.data(8, 8);

const REPLY: u32 = 1;
// const CLOSE: u32 = 2;
// const ERROR_FLAG: u32 = 4;

function result(flags: u32, ptr: usize, len: usize): usize {
  store<u32>(RESULT, flags, 0);
  store<u32>(RESULT, <u32>ptr, 4);
  store<u32>(RESULT, <u32>len, 8);
  return RESULT;
}

export function sandport_abi_version(): i32 {
  return 1;
}

/**
 * `size` fresh bytes from the runtime's TLSF allocator (`heap.alloc`: unmanaged memory the
 * garbage collector leaves alone until `heap.free`).
 */
export function sandport_alloc(size: usize): usize {
  if (size == 0) return EMPTY;
  return heap.alloc(size);
}

export function sandport_free(ptr: usize, size: usize): void {
  if (size == 0 || ptr == EMPTY) return;
  heap.free(ptr);
}

let aborting = false;

/** Replaces AssemblyScript's `abort` import: logs the failure at error level, then traps. */
function onAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  if (!aborting) {
    aborting = true; // the log line allocates: do not come back here if that fails too
    const what = message !== null ? message : "abort";
    const where = fileName !== null ? fileName : "?";
    log(ERROR, "upper-assemblyscript: " + what + " at " + where + ":" + line.toString() + ":" + column.toString());
  }
  unreachable();
}

// ---- The handler -------------------------------------------------------------------------------

/**
 * Whether `len` bytes at `ptr` are well-formed UTF-8 (no overlong forms, no surrogates, nothing
 * above U+10FFFF). AssemblyScript's `String.UTF8.decode` does not check: it turns malformed
 * input into garbage (and swallows the bytes after it), so it only gets valid text.
 */
function isUtf8(ptr: usize, len: usize): bool {
  let i: usize = 0;
  while (i < len) {
    const b0 = <u32>load<u8>(ptr + i);
    if (b0 < 0x80) { i += 1; continue; }
    let n: usize; // continuation bytes
    let min: u32; // smallest code point allowed for that length
    let cp: u32;
    if ((b0 & 0xe0) == 0xc0) { n = 1; min = 0x80; cp = b0 & 0x1f; }
    else if ((b0 & 0xf0) == 0xe0) { n = 2; min = 0x800; cp = b0 & 0x0f; }
    else if ((b0 & 0xf8) == 0xf0) { n = 3; min = 0x10000; cp = b0 & 0x07; }
    else return false;
    if (i + n >= len) return false; // truncated sequence
    for (let k: usize = 1; k <= n; k++) {
      const b = <u32>load<u8>(ptr + i + k);
      if ((b & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

export function sandport_on_message(conn: i64, msgPtr: usize, msgLen: usize): usize {
  // Settings are read on every call: an instance may be fresh for each message.
  const prefix = configGet("prefix");
  const prefixBytes = prefix !== null ? String.UTF8.encode(prefix) : new ArrayBuffer(0);
  const plen = <usize>prefixBytes.byteLength;

  let out: usize;
  let len: usize;
  if (isUtf8(msgPtr, msgLen)) {
    // Text: upper-case with Unicode rules.
    const upper = String.UTF8.decodeUnsafe(msgPtr, msgLen).toUpperCase();
    const ulen = <usize>String.UTF8.byteLength(upper);
    len = plen + ulen;
    out = sandport_alloc(len);
    String.UTF8.encodeUnsafe(changetype<usize>(upper), upper.length, out + plen);
  } else {
    // Not UTF-8: upper-case the ASCII letters and keep every other byte as it is.
    len = plen + msgLen;
    out = sandport_alloc(len);
    for (let i: usize = 0; i < msgLen; i++) {
      const b = load<u8>(msgPtr + i);
      store<u8>(out + plen + i, b >= 0x61 && b <= 0x7a ? b - 0x20 : b);
    }
  }
  memory.copy(out, changetype<usize>(prefixBytes), plen);

  // The message buffer is ours: give it back.
  sandport_free(msgPtr, msgLen);

  log(DEBUG, "conn " + conn.toString() + ": upper-cased " + msgLen.toString() + " bytes");
  // The reply is an unmanaged buffer: the host frees it with `sandport_free` after copying it
  // (when it is not empty).
  return result(REPLY, out, len);
}
