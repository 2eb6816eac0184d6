//! What can be wrong with a plugin file: one variant per check loading makes, each keeping the
//! error that made it fail as its `source()`, so the whole chain reaches whoever prints it.
//!
//! Every variant's own text says only which check failed; the cause follows when the chain is
//! printed (`plugin X: it cannot be compiled: <cause>: <cause>`).
//!
//! In wasmtime 48 `wasmtime::Error` is wasmtime's own type, not anyhow's. Like anyhow's, it cannot
//! implement `std::error::Error` itself, but it dereferences to one whose `source()` walks its
//! context chain, which is what `#[source]` uses: nothing is flattened into a string here.

/// What is wrong with a plugin file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read it")]
    Read(#[source] std::io::Error),

    #[error("not a WebAssembly file (it does not start with the `\\0asm` header)")]
    NotWasm,

    /// A core module whose imports or exports break the ABI; the detail says which.
    #[error("it is a core module that does not implement the sandport core ABI: {0} (see docs/core-abi.md)")]
    WrongAbi(String),

    #[error("it is not valid WebAssembly text")]
    BadText(#[source] wat::Error),

    #[error("it cannot be compiled")]
    Invalid(#[source] wasmtime::Error),

    #[error("it does not implement the sandport:plugin/handler world")]
    WrongWorld(#[source] wasmtime::Error),

    #[error("it imports something the host does not provide")]
    RefusedImport(#[source] wasmtime::Error),

    #[error("it cannot be instantiated")]
    Instantiate(#[source] wasmtime::Error),

    /// A contract 0.2 plugin's state namespace is its name, which must be a valid one.
    #[error("its file name cannot name its state namespace")]
    BadName(#[source] crate::state::NamespaceError),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Every message of `e`'s chain, outermost first.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(e), |&e| e.source())
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn a_compile_failure_keeps_wasmtimes_whole_chain_as_its_source() {
        let engine = wasmtime::Engine::default();
        // A valid header, then a section id that does not exist.
        let cause = wasmtime::Module::new(&engine, b"\0asm\x01\0\0\0\x7f\x01\0")
            .expect_err("the module is invalid");
        let printed_by_wasmtime = format!("{cause:#}");
        let e = PluginError::Invalid(cause);

        assert_eq!(
            e.to_string(),
            "it cannot be compiled",
            "no cause in its own text"
        );
        let chain = chain(&e);
        assert!(
            chain.len() >= 3,
            "wasmtime's context and its cause: {chain:?}"
        );
        assert_eq!(chain[1..].join(": "), printed_by_wasmtime);

        let whole = crate::error::Error::plugin("p.wasm", e);
        assert_eq!(
            self::chain(&whole).join(": "),
            format!("plugin p.wasm: it cannot be compiled: {printed_by_wasmtime}")
        );
        assert!(whole.source().is_some());
    }
}
