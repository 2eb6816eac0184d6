//! TEMPORARY (replaced by the plugin reshape's limits.rs at merge).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct CutOff(pub(crate) Arc<OnceLock<Instant>>);

impl CutOff {
    pub fn set(&self, at: Instant) {
        let _ = self.0.set(at);
    }

    pub fn at(&self) -> Option<Instant> {
        self.0.get().copied()
    }
}
