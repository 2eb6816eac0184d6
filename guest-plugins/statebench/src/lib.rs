//! `statebench` (benchmarks only): echoes every message after `ops` host-state round trips
//! (a `set` of the 64-byte value, then a `get` of it, each counted as one op) in its own bucket.
//! The call-path benchmark runs it with `ops` 0 and 16: the difference, per op, is what a state
//! call costs a guest, the host's call overhead excluded.

wit_bindgen::generate!({
    path: "../../wit/v0.2",
    world: "handler",
    generate_all,
});

use wasi::keyvalue::store;

struct StateBench;

/// The `ops` setting, read once per instance: a reused instance then measures only the state
/// calls and the contract's own call cost.
fn ops() -> Result<usize, String> {
    static OPS: std::sync::OnceLock<Result<usize, String>> = std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        config_get("ops").map_or(Ok(0), |v| v.parse().map_err(|e| format!("ops {v:?}: {e}")))
    })
    .clone()
}

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

impl Guest for StateBench {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_message(_conn: u64, message: Vec<u8>) -> Result<Response, String> {
        let ops = ops()?;
        if ops > 0 {
            let bucket = store::open("default").map_err(|e| format!("open: {e:?}"))?;
            let value = [b'v'; 64];
            for i in 0..ops / 2 {
                let key = KEYS[i % KEYS.len()];
                bucket.set(key, &value).map_err(|e| format!("set: {e:?}"))?;
                let got = bucket.get(key).map_err(|e| format!("get: {e:?}"))?;
                if got.as_deref() != Some(&value[..]) {
                    return Err(format!("get {key} returned {got:?}"));
                }
            }
        }
        Ok(Response { reply: Some(message), close: false })
    }

    fn on_disconnect(_conn: u64) {}
}

export!(StateBench);
