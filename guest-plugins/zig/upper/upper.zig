//! `upper` in Zig: replies every message upper-cased (ASCII), prefixed by the `prefix` setting if
//! it is given (`--config upper-zig.prefix=">> "`), and logs a debug line
//! "conn N: upper-cased M bytes".
//!
//! A plain core WebAssembly module (wasm32-freestanding, no WASI at all) implementing the sandport
//! core-module ABI, docs/core-abi.md. It exports no `sandport_on_connect` nor
//! `sandport_on_disconnect`: the host accepts connections silently and has nothing to call when
//! they close.

const std = @import("std");

/// Zig's allocator for WebAssembly: a real free-list allocator over `memory.grow`, so a long-lived
/// instance (`--isolation worker`) reuses the memory it frees.
const gpa = std.heap.wasm_allocator;

// ---- The host's imports (module `sandport`) --------------------------------------------------

const Level = enum(i32) { trace = 0, debug = 1, info = 2, warn = 3, err = 4 };

extern "sandport" fn log(level: Level, ptr: [*]const u8, len: usize) void;
extern "sandport" fn config_get(key_ptr: [*]const u8, key_len: usize, out_ptr: [*]u8, out_cap: usize) i32;

fn logLine(level: Level, text: []const u8) void {
    log(level, text.ptr, text.len);
}

/// Safety checks stay on (`-O ReleaseSafe`); a failed one logs its message at error level and
/// traps, which the host reports as a failed call (and throws the instance away).
pub const panic = std.debug.FullPanic(struct {
    fn onPanic(message: []const u8, _: ?usize) noreturn {
        logLine(.err, message);
        @trap();
    }
}.onPanic);

/// This plugin's `--config upper-zig.KEY=...` value, in memory from `gpa` (the caller frees it),
/// or null when the key is not set.
fn configGet(key: []const u8) error{OutOfMemory}!?[]u8 {
    var buf: [256]u8 = undefined;
    const n = config_get(key.ptr, key.len, &buf, buf.len);
    if (n < 0) return null;
    const len: usize = @intCast(n);
    const value = try gpa.alloc(u8, len);
    if (len <= buf.len) {
        @memcpy(value, buf[0..len]);
    } else {
        // Longer than the stack buffer: ask again with room for all of it.
        _ = config_get(key.ptr, key.len, value.ptr, value.len);
    }
    return value;
}

// ---- The ABI's plumbing ------------------------------------------------------------------------

/// What a hook returns a pointer to (12 bytes, 4-byte aligned, valid until the next hook call).
const HookResult = extern struct { flags: u32, ptr: u32, len: u32 };
const REPLY: u32 = 1;
const CLOSE: u32 = 2;
const ERROR: u32 = 4;

var result: HookResult = .{ .flags = 0, .ptr = 0, .len = 0 };

/// Returned with ERROR when even the error message cannot be allocated; `sandport_free` knows
/// not to free it.
const oom_message = "upper-zig: out of memory";

fn reply(bytes: []u8) *HookResult {
    const ptr = if (bytes.len == 0) &empty else bytes.ptr;
    result = .{ .flags = REPLY, .ptr = @intFromPtr(ptr), .len = bytes.len };
    return &result;
}

fn fail(message: []const u8) *HookResult {
    // The host hands the message back to `sandport_free`, so it must come from `gpa`.
    const copy = gpa.dupe(u8, message) catch {
        result = .{ .flags = ERROR, .ptr = @intFromPtr(oom_message.ptr), .len = oom_message.len };
        return &result;
    };
    result = .{ .flags = ERROR, .ptr = @intFromPtr(copy.ptr), .len = copy.len };
    return &result;
}

export fn sandport_abi_version() i32 {
    return 1;
}

/// Where 0-byte buffers point. Zig's own empty slices point at `maxInt(usize)`, which is outside
/// memory: the host checks even 0-byte buffers against the memory's size.
var empty: [1]u8 = .{0};

/// `size` fresh bytes for the host; 0 (null) when out of memory.
export fn sandport_alloc(size: usize) ?[*]u8 {
    if (size == 0) return &empty;
    const buf = gpa.alloc(u8, size) catch return null;
    return buf.ptr;
}

export fn sandport_free(ptr: [*]u8, size: usize) void {
    if (size == 0 or @intFromPtr(ptr) == @intFromPtr(oom_message)) return;
    gpa.free(ptr[0..size]);
}

// ---- The handler -------------------------------------------------------------------------------

export fn sandport_on_message(conn: i64, msg_ptr: [*]u8, msg_len: usize) *HookResult {
    const message = msg_ptr[0..msg_len];
    // The message buffer is ours from now on: give it back when done.
    defer gpa.free(message);

    // Settings are read on every call: an instance may be fresh for each message.
    const prefix = configGet("prefix") catch return fail("upper-zig: out of memory");
    defer if (prefix) |p| gpa.free(p);
    const p = prefix orelse "";

    const out = gpa.alloc(u8, p.len + message.len) catch return fail("upper-zig: out of memory");
    @memcpy(out[0..p.len], p);
    for (message, out[p.len..]) |c, *o| o.* = std.ascii.toUpper(c);

    var line: [96]u8 = undefined;
    const text = std.fmt.bufPrint(&line, "conn {d}: upper-cased {d} bytes", .{ conn, message.len }) catch "upper-cased";
    logLine(.debug, text);

    // The host copies the reply, then frees it with `sandport_free(ptr, len)` (when len > 0).
    return reply(out);
}
