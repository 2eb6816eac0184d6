//! Rust bindings for the `sandport:plugin/handler` world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
});
