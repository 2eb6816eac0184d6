//! Rust bindings for the two contracts in `wit/`: `sandport:plugin@0.1.0` (`wit/handler.wit`)
//! at the top level, `sandport:plugin@0.2.0` (`wit/v0.2/`) in [`v2`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
});

/// `sandport:plugin@0.2.0`, with `wasi:keyvalue` draft2's resources backed by [`super::kv`].
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "sandport:plugin/handler@0.2.0",
        with: {
            "wasi:keyvalue/store.bucket": crate::plugin::kv::Bucket,
            "wasi:keyvalue/atomics.cas": crate::plugin::kv::Cas,
        },
    });
}
