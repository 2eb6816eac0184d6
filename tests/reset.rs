//! Instances reset in place under `--isolation message` (the default): a worker keeps one
//! instance per plugin and puts it back as instantiation left it after every call. Every call
//! must see exactly what a new instance would, whatever the guest changed in the call before:
//! checked against `--no-reset` (a new instance per call), with a core module that changes
//! everything an instance holds.

use crate::core_abi::module;
use crate::metrics::{scrape, value, with_metrics};
use crate::support::*;

/// Changes, in every message, each thing an instance holds and replies what it found first:
/// a global ("1": it was 0), a byte of memory ("1"), the memory's size after growing it by a
/// page ("2": it was 1 page) and the first byte of that new page ("0": new pages are zeroed),
/// a table's size ("1") and whether its first element is null ("0"), then grows and clears
/// the table, uses and drops a passive data segment and a passive element segment (a dropped
/// segment traps when used again). A message starting with `t` changes the global and traps.
const CHANGES_EVERYTHING: &str = r#"
  (global $g (mut i32) (i32.const 0))
  (table $t 1 10 funcref)
  (elem (table $t) (i32.const 0) func $f)
  (elem $e func $f)
  (data $d "xyz")
  (func $f)
  (func $digit (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (local.get $v))))
  (func (export "sandport_on_message") (param $conn i64) (param $ptr i32) (param $len i32) (result i32)
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 116))
      (then (global.set $g (i32.const 7)) unreachable))
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (call $digit (i32.const 7000) (global.get $g))
    (i32.store8 (i32.const 5000) (i32.add (i32.load8_u (i32.const 5000)) (i32.const 1)))
    (call $digit (i32.const 7001) (i32.load8_u (i32.const 5000)))
    (drop (memory.grow (i32.const 1)))
    (call $digit (i32.const 7002) (memory.size))
    (call $digit (i32.const 7003) (i32.load8_u (i32.const 65536)))
    (i32.store8 (i32.const 65536) (i32.const 9))
    (call $digit (i32.const 7004) (table.size $t))
    (call $digit (i32.const 7005) (ref.is_null (table.get $t (i32.const 0))))
    (drop (table.grow $t (ref.null func) (i32.const 1)))
    (table.set $t (i32.const 0) (ref.null func))
    (memory.init $d (i32.const 6000) (i32.const 0) (i32.const 3))
    (data.drop $d)
    (table.init $t $e (i32.const 1) (i32.const 0) (i32.const 1))
    (elem.drop $e)
    (call $result (i32.const 1) (i32.const 7000) (i32.const 6)))
"#;

/// What a new instance replies to any message but a trapping one.
const PRISTINE: &str = "112010";

#[test]
fn every_message_sees_a_pristine_instance_whether_reset_in_place_or_made_anew() {
    let dir = TempDir::new("reset-everything");
    let path = module(&dir, "changes", CHANGES_EVERYTHING);
    for extra in [&[][..], &["--no-reset"][..]] {
        let server = Server::builder()
            .plugin(&path)
            .args(["--workers", "1"])
            .args(extra)
            .start();
        let mut a = server.connect();
        for _ in 0..5 {
            a.send_line("x");
            a.expect_line(PRISTINE);
        }
        // Pipelined, and from a second connection on the same worker.
        let mut b = server.connect();
        b.send(b"x\nx\nx\n");
        for _ in 0..3 {
            b.expect_line(PRISTINE);
        }
        server.assert_no_call_failed();
    }
}

/// Reports, before changing anything, the byte at offset 3000 of each of the first 16 host
/// pages ("0": pristine), the memory's size ("1") and "0", then by the message: `wN` writes
/// page N (a hex digit), `rN` only reads it, `gN` grows the memory by a page and reports (in
/// place of that "0") then writes the byte at 3000 of the new memory's page N. Pages 4 to 9
/// are the copy-on-write image (the two data segments), the others zero pages until written.
const WRITES_PAGES: &str = r#"
  (data (i32.const 20000) "image")
  (data (i32.const 40000) "image")
  (func $digit (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (local.get $v))))
  (func (export "sandport_on_message") (param $conn i64) (param $ptr i32) (param $len i32) (result i32)
    (local $k i32) (local $cmd i32) (local $n i32) (local $at i32)
    (loop $each
      (call $digit (i32.add (i32.const 61500) (local.get $k))
        (i32.load8_u (i32.add (i32.mul (local.get $k) (i32.const 4096)) (i32.const 3000))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $each (i32.lt_u (local.get $k) (i32.const 16))))
    (call $digit (i32.const 61516) (memory.size))
    (call $digit (i32.const 61517) (i32.const 0))
    (local.set $cmd (i32.load8_u (local.get $ptr)))
    (local.set $n (i32.load8_u (i32.add (local.get $ptr) (i32.const 1))))
    (local.set $n (if (result i32) (i32.ge_u (local.get $n) (i32.const 97))
      (then (i32.sub (local.get $n) (i32.const 87)))
      (else (i32.sub (local.get $n) (i32.const 48)))))
    (local.set $at (i32.add (i32.mul (local.get $n) (i32.const 4096)) (i32.const 3000)))
    (if (i32.eq (local.get $cmd) (i32.const 119))
      (then (i32.store8 (local.get $at) (i32.const 1))))
    (if (i32.eq (local.get $cmd) (i32.const 114))
      (then (drop (i32.load8_u (local.get $at)))))
    (if (i32.eq (local.get $cmd) (i32.const 103))
      (then
        (drop (memory.grow (i32.const 1)))
        (local.set $at (i32.add (i32.const 65536) (local.get $at)))
        (call $digit (i32.const 61517) (i32.load8_u (local.get $at)))
        (i32.store8 (local.get $at) (i32.const 1))))
    (call $result (i32.const 1) (i32.const 61500) (i32.const 18)))
"#;

#[test]
fn pages_written_again_or_for_the_first_time_are_all_reset() {
    // A reset scans memory for the pages the call wrote only after the worker took a page
    // fault; otherwise it resets the pages the last scan found (a page becomes writable only
    // through a fault, or through growing memory). Writing the same page again, reading then
    // writing a page, writing an image page, and growing memory over pages a reset left
    // resident must all leave the next message a pristine instance.
    let dir = TempDir::new("reset-pages");
    let path = module(&dir, "changes", WRITES_PAGES);
    let messages = [
        "w3", "w3", "w3", "r5", "w5", "w5", "w3", "g2", "g2", "w3", "g7", "w9", "r9", "w9", "wa",
        "w4", "w4", "w6", "g4", "w0", "wf", "w3", "g4", "w3",
    ];
    let pristine = "000000000000000010";
    for reset in [true, false] {
        let extra: &[&str] = if reset { &[] } else { &["--no-reset"] };
        let (server, m) = with_metrics(
            std::slice::from_ref(&path),
            &[&["--workers", "1"][..], extra].concat(),
        );
        let mut a = server.connect();
        for line in messages {
            a.send_line(line);
            a.expect_line(pristine);
        }
        // Pipelined: the calls run back to back.
        let batch: String = messages.iter().map(|m| format!("{m}\n")).collect();
        a.send(batch.as_bytes());
        for _ in messages {
            a.expect_line(pristine);
        }
        server.assert_no_call_failed();
        let s = scrape(m);
        let labels = [("plugin", "changes")];
        let resets = value(&s, "sandport_plugin_instances_reset_total", &labels);
        let scans = value(&s, "sandport_plugin_instance_reset_scans_total", &labels);
        if reset {
            // on-connect and every message; some resets scanned (the first, and after the
            // first write of a page), the others did not.
            let calls = 1.0 + 2.0 * messages.len() as f64;
            assert_eq!(resets, Some(calls), "{s}");
            assert!(scans.is_some_and(|n| n >= 1.0 && n < calls), "{s}");
        } else {
            assert_eq!((resets, scans), (Some(0.0), Some(0.0)), "{s}");
        }
    }
}

#[test]
fn after_a_trap_the_next_message_gets_a_new_pristine_instance() {
    let dir = TempDir::new("reset-trap");
    let path = module(&dir, "changes", CHANGES_EVERYTHING);
    let (server, m) = with_metrics(&[path], &["--workers", "1"]);
    let labels = [("plugin", "changes")];
    let mut a = server.connect();
    a.send_line("x");
    a.expect_line(PRISTINE);
    // The trap closes the connection and throws its instance away, half-changed.
    a.send_line("trap");
    a.expect_closed_without_reply(REPLY_TIMEOUT);
    let mut b = server.connect();
    for _ in 0..3 {
        b.send_line("x");
        b.expect_line(PRISTINE);
    }
    // One instance before the trap, one after (its on-disconnect and b's calls ran on it).
    let s = scrape(m);
    let made = value(&s, "sandport_plugin_instances_created_total", &labels);
    assert_eq!(made, Some(2.0), "{s}");
}

/// Sends `messages` lines on one connection to a one-worker server of `path` and expects
/// `reply` to each; returns the instances made and reset (every hook is a call, so the
/// connection's `on-connect` counts too, exported or not).
fn replies_and_instances(
    path: &std::path::Path,
    args: &[&str],
    messages: usize,
    reply: &str,
) -> (f64, f64) {
    let (server, m) = with_metrics(
        &[path.to_path_buf()],
        &[&["--workers", "1"][..], args].concat(),
    );
    let mut a = server.connect();
    for _ in 0..messages {
        a.send_line("x");
        a.expect_line(reply);
    }
    server.assert_no_call_failed();
    let labels = [("plugin", "changes")];
    let s = scrape(m);
    let made = value(&s, "sandport_plugin_instances_created_total", &labels);
    let reset = value(&s, "sandport_plugin_instances_reset_total", &labels);
    (made.unwrap_or(-1.0), reset.unwrap_or(-1.0))
}

#[test]
fn what_instantiation_wrote_and_grew_is_restored_too() {
    let dir = TempDir::new("reset-initialize");
    // `_initialize` (run in each instance with --no-preinit) grows the memory by a page and
    // writes 5 at its first byte: every message must find 2 pages (3 after its own growth)
    // and that 5, which it overwrites.
    let body = format!(
        r#"{CHANGES_EVERYTHING}
           (func (export "_initialize")
             (drop (memory.grow (i32.const 1)))
             (i32.store8 (i32.const 65536) (i32.const 5)))"#
    );
    let path = module(&dir, "changes", &body);
    let fresh = replies_and_instances(&path, &["--no-preinit", "--no-reset"], 4, "113510");
    assert_eq!(fresh, (5.0, 0.0));
    let reset = replies_and_instances(&path, &["--no-preinit"], 4, "113510");
    assert_eq!(reset, (1.0, 5.0));
}

#[test]
fn a_plugin_whose_instances_cannot_be_reset_gets_a_new_instance_per_call() {
    let dir = TempDir::new("reset-refused");
    // `_initialize` dirties every other page of 33 MiB: more separate runs of written pages
    // than a reset point records (4,096), so the plugin's instances cannot be reset, and it
    // gets a new instance per call, with the same replies.
    let body = r#"
      (global $g (mut i32) (i32.const 0))
      (func (export "_initialize")
        (local $at i32)
        (drop (memory.grow (i32.const 520)))
        (local.set $at (i32.const 65536))
        (loop $next
          (i32.store8 (local.get $at) (i32.const 1))
          (local.set $at (i32.add (local.get $at) (i32.const 8192)))
          (br_if $next (i32.lt_u (local.get $at) (i32.const 34078720)))))
      (func (export "sandport_on_message") (param i64) (param $ptr i32) (param $len i32) (result i32)
        (global.set $g (i32.add (global.get $g) (i32.const 1)))
        (i32.store8 (i32.const 7000) (i32.add (i32.const 48) (global.get $g)))
        (call $result (i32.const 1) (i32.const 7000) (i32.const 1)))"#;
    let path = module(&dir, "changes", body);
    let (made, reset) = replies_and_instances(&path, &["--no-preinit"], 3, "1");
    assert_eq!((made, reset), (4.0, 0.0));
}

#[test]
fn a_component_still_holding_a_resource_handle_is_not_reset_but_replaced() {
    // `keep` leaves the call holding a bucket's handle: a reset cannot take it back, so that
    // instance is dropped and the next call gets a new one, which holds nothing.
    let (server, m) = with_metrics(&[test_plugin("statetest")], &["--workers", "1"]);
    let mut a = server.connect();
    for (line, reply) in [("kept", "false"), ("keep", "ok"), ("kept", "false")] {
        a.send_line(line);
        a.expect_line(reply);
    }
    server.assert_no_call_failed();
    let s = scrape(m);
    let labels = [("plugin", "statetest")];
    let made = value(&s, "sandport_plugin_instances_created_total", &labels);
    assert_eq!(made, Some(2.0), "{s}");
    // Under `worker` the same instance keeps the bucket: `keep` really keeps it.
    let server = Server::builder()
        .plugin(test_plugin("statetest"))
        .args(["--workers", "1", "--isolation", "worker"])
        .start();
    let mut a = server.connect();
    for (line, reply) in [("keep", "ok"), ("kept", "true")] {
        a.send_line(line);
        a.expect_line(reply);
    }
}
