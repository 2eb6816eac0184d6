;; `upper` in hand-written WebAssembly text: replies every message upper-cased (ASCII), prefixed
;; by the `prefix` setting if it is given (`--config upper-wat.prefix=">> "`), and logs a debug
;; line "conn N: upper-cased M bytes".
;;
;; A plain core module implementing the sandport core-module ABI (docs/core-abi.md). It exports
;; no `sandport_on_connect` / `sandport_on_disconnect`: the host then accepts connections
;; silently and has nothing to tell on disconnect.
;;
;; Memory layout (page 0):
;;      0 ..   16  unused (keeps address 0 out of every pointer we hand out)
;;     16 ..   28  the hook result: flags, ptr, len
;;     64 ..  255  constant strings (data segments below)
;;    256 ..  511  scratch for formatting the log line
;;   1024 ..       the heap (see `sandport_alloc`)
(module
  (import "sandport" "log" (func $log (param i32 i32 i32)))
  (import "sandport" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  (data (i32.const 64) "prefix")                 ;; 6 bytes
  (data (i32.const 80) "conn ")                  ;; 5 bytes
  (data (i32.const 96) ": upper-cased ")         ;; 14 bytes
  (data (i32.const 112) " bytes")                ;; 6 bytes
  (data (i32.const 128) "upper-wat: out of memory") ;; 24 bytes

  (global $RESULT i32 (i32.const 16))
  (global $SCRATCH i32 (i32.const 256))
  (global $HEAP_BASE i32 (i32.const 1024))

  ;; The allocator: a bump allocator that counts live blocks. Every block the host gets (the
  ;; message) or gives back (the reply) is freed exactly once, so once a call is over nothing is
  ;; live and the heap starts again at $HEAP_BASE: a long-lived instance (`--isolation worker`
  ;; or `connection`) reuses the same few bytes for ever instead of growing. Freeing the block on
  ;; top of the heap also gives its bytes back at once.
  (global $heap (mut i32) (i32.const 1024))
  (global $live (mut i32) (i32.const 0))

  (func (export "sandport_abi_version") (result i32)
    (i32.const 1))

  ;; `size` fresh bytes, 8-byte aligned; grows the memory when needed; 0 when it cannot.
  ;; A 0-byte request gets $HEAP_BASE, which is never counted nor freed.
  (func $alloc (export "sandport_alloc") (param $size i32) (result i32)
    (local $p i32)
    (local $end i64)
    (local $have i64)
    (if (i32.eqz (local.get $size))
      (then (return (global.get $HEAP_BASE))))
    (local.set $p (global.get $heap))
    ;; end = align8(p + size), computed in 64 bits so that it cannot wrap around.
    (local.set $end
      (i64.and
        (i64.add
          (i64.add (i64.extend_i32_u (local.get $p)) (i64.extend_i32_u (local.get $size)))
          (i64.const 7))
        (i64.const -8)))
    (local.set $have (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
    (if (i64.gt_u (local.get $end) (local.get $have))
      (then
        ;; grow by ceil((end - have) / 64KiB) pages; -1 means the memory limit was hit
        (if (i32.eq
              (memory.grow
                (i32.wrap_i64
                  (i64.shr_u
                    (i64.add (i64.sub (local.get $end) (local.get $have)) (i64.const 65535))
                    (i64.const 16))))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.wrap_i64 (local.get $end)))
    (global.set $live (i32.add (global.get $live) (i32.const 1)))
    (local.get $p))

  ;; Gives a block back. Pointers that are not heap blocks (0-byte blocks, the static error
  ;; message) are ignored.
  (func $free (export "sandport_free") (param $ptr i32) (param $size i32)
    (if (i32.eqz (local.get $size)) (then (return)))
    (if (i32.or (i32.lt_u (local.get $ptr) (global.get $HEAP_BASE))
                (i32.ge_u (local.get $ptr) (global.get $heap)))
      (then (return)))
    (global.set $live (i32.sub (global.get $live) (i32.const 1)))
    (if (i32.le_s (global.get $live) (i32.const 0))
      (then
        ;; nothing live any more: start the heap over
        (global.set $live (i32.const 0))
        (global.set $heap (global.get $HEAP_BASE))
        (return)))
    ;; the block on top of the heap: take its bytes back
    (if (i32.eq
          (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7))
                   (i32.const -8))
          (global.get $heap))
      (then (global.set $heap (local.get $ptr)))))

  ;; Copies `n` bytes from `src` to `dst`; returns dst + n.
  (func $copy (param $dst i32) (param $src i32) (param $n i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i))
                    (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.add (local.get $dst) (local.get $n)))

  ;; Writes `v` in decimal at `dst`; returns the address after the last digit.
  (func $decimal (param $dst i32) (param $v i64) (result i32)
    (local $digits i32)
    (local $t i64)
    (local $i i32)
    ;; count the digits
    (local.set $t (local.get $v))
    (loop $count
      (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
      (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
      (br_if $count (i64.ne (local.get $t) (i64.const 0))))
    ;; write them from the last one back
    (local.set $i (local.get $digits))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i))
                  (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $write (i32.ne (local.get $i) (i32.const 0))))
    (i32.add (local.get $dst) (local.get $digits)))

  ;; Stores the hook result and returns its address.
  (func $result (param $flags i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (global.get $RESULT) (local.get $flags))
    (i32.store offset=4 (global.get $RESULT) (local.get $ptr))
    (i32.store offset=8 (global.get $RESULT) (local.get $len))
    (global.get $RESULT))

  (func (export "sandport_on_message") (param $conn i64) (param $msg i32) (param $len i32) (result i32)
    (local $plen i32)
    (local $total i32)
    (local $out i32)
    (local $i i32)
    (local $b i32)
    (local $end i32)
    ;; The prefix's length (-1: not set): a first call with no room, then a second one that
    ;; writes it straight into the reply. Settings are read on every call: an instance may be
    ;; fresh for each message.
    (local.set $plen (call $config_get (i32.const 64) (i32.const 6) (global.get $RESULT) (i32.const 0)))
    (if (i32.lt_s (local.get $plen) (i32.const 0)) (then (local.set $plen (i32.const 0))))
    (local.set $total (i32.add (local.get $plen) (local.get $len)))
    (local.set $out (call $alloc (local.get $total)))
    (if (i32.eqz (local.get $out))
      (then
        ;; ERROR with a static message: `sandport_free` ignores it
        (return (call $result (i32.const 4) (i32.const 128) (i32.const 24)))))
    (if (i32.gt_s (local.get $plen) (i32.const 0))
      (then (drop (call $config_get (i32.const 64) (i32.const 6) (local.get $out) (local.get $plen)))))
    ;; upper-case: bytes 'a'..'z' (97..122) lose 32; everything else is copied as it is
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $b (i32.load8_u (i32.add (local.get $msg) (local.get $i))))
        (if (i32.le_u (i32.sub (local.get $b) (i32.const 97)) (i32.const 25))
          (then (local.set $b (i32.sub (local.get $b) (i32.const 32)))))
        (i32.store8 (i32.add (i32.add (local.get $out) (local.get $plen)) (local.get $i)) (local.get $b))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; the message buffer is ours: give it back
    (call $free (local.get $msg) (local.get $len))
    ;; "conn N: upper-cased M bytes", at debug level (1)
    (local.set $end (call $copy (global.get $SCRATCH) (i32.const 80) (i32.const 5)))
    (local.set $end (call $decimal (local.get $end) (local.get $conn)))
    (local.set $end (call $copy (local.get $end) (i32.const 96) (i32.const 14)))
    (local.set $end (call $decimal (local.get $end) (i64.extend_i32_u (local.get $len))))
    (local.set $end (call $copy (local.get $end) (i32.const 112) (i32.const 6)))
    (call $log (i32.const 1) (global.get $SCRATCH) (i32.sub (local.get $end) (global.get $SCRATCH)))
    ;; REPLY; the host frees the reply with `sandport_free` once it has copied it
    (call $result (i32.const 1) (local.get $out) (local.get $total)))
)
