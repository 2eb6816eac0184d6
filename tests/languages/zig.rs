//! Plugins written in Zig, built from source by guest-plugins/zig/build.sh.

super::common_tests! { "zig":
    upper;
    /// Zig's `wasm_allocator` reuses what `sandport_free` gives back: on one long-lived instance
    /// with a 4 MiB memory cap (the module starts at about 1 MiB, mostly stack), 200 messages of
    /// 40 KB each (16 MB in all, with their replies) all get through.
    memory_reuse("4MiB", 1_000_000, "");
    /// Only ASCII letters change; every other byte (UTF-8 or not) is copied as it is.
    ascii_only;
    /// A prefix longer than the first 256-byte buffer is fetched again with room for all of it.
    long_prefix;
}
