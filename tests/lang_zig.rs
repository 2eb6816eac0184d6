//! Plugins written in zig, built from source by guest-plugins/zig/build.sh.

#[test]
fn upper_zig() {
    crate::languages::check_upper("zig");
}

/// Zig's `wasm_allocator` reuses what `sandport_free` gives back: on one long-lived instance with
/// a 4 MiB memory cap (the module starts at about 1 MiB, mostly stack), 200 messages of 40 KB
/// each (16 MB in all, with their replies) all get through.
#[test]
fn upper_zig_reuses_its_memory_on_a_long_lived_instance() {
    crate::languages::check_memory_reuse("zig", "4MiB", 1_000_000, "");
}

/// Only ASCII letters change; every other byte (UTF-8 or not) is copied as it is.
#[test]
fn upper_zig_changes_only_ascii_letters() {
    crate::languages::check_ascii_only("zig");
}

/// A prefix longer than the first 256-byte buffer is fetched again with room for all of it.
#[test]
fn upper_zig_long_prefix() {
    crate::languages::check_long_prefix("zig");
}
