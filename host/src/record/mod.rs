//! Recording sessions (`--record DIR`): the workers hand each event (connect, message, reply,
//! close) to a channel without waiting, and one thread writes them to capture files
//! (`format.rs`, docs/record.md) within a size cap. When the writer falls behind, events are
//! dropped and counted rather than slowing a worker; a session that lost one stops being
//! recorded, so what is in the files is whole.

pub mod format;
pub mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};

pub use format::{Event, Record};

/// Records waiting for the writer at most, and their payload bytes at most: past either,
/// events are dropped (a queue of 1 MiB messages must not hold gigabytes).
const QUEUE: usize = 65_536;
const QUEUE_BYTES: usize = 64 << 20;

/// A worker's way to record; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: Sender<Record>,
    /// Events dropped because the writer fell behind (`sandport_record_dropped_total`).
    dropped: Arc<AtomicU64>,
    /// Payload bytes queued and not yet taken by the writer, against [`QUEUE_BYTES`].
    queued: Arc<AtomicUsize>,
}

/// Microseconds since 1970, the capture's clock.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Recorder {
    /// Creates `dir` if needed and starts the writer thread; it ends once every `Recorder` is
    /// dropped, after writing what was queued.
    pub fn start(
        dir: &Path,
        cap: u64,
        dropped: Arc<AtomicU64>,
    ) -> std::io::Result<(Recorder, JoinHandle<()>)> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = writer::Writer::new(dir, now_us(), cap, queued.clone());
        let handle = std::thread::Builder::new()
            .name("sandport-record".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            Recorder {
                tx,
                dropped,
                queued,
            },
            handle,
        ))
    }

    /// Queues `event` of connection `conn`; false (and counted) when the writer is behind.
    pub fn record(&self, conn: u64, event: Event) -> bool {
        let bytes = event.payload_len();
        if self.queued.fetch_add(bytes, Relaxed) + bytes > QUEUE_BYTES {
            self.queued.fetch_sub(bytes, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return false;
        }
        let r = Record {
            conn,
            at_us: now_us(),
            event,
        };
        match self.tx.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(bytes, Relaxed);
                self.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_past_the_queued_bytes_are_dropped_and_counted_not_buffered() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        // No writer takes anything: the queue only fills.
        let r = Recorder {
            tx,
            dropped: dropped.clone(),
            queued: Arc::default(),
        };
        let big = vec![0u8; 1 << 20];
        let taken = (0..100)
            .filter(|_| r.record(1, Event::Message(big.clone())))
            .count();
        assert_eq!(taken, QUEUE_BYTES >> 20, "64 MiB of 1 MiB messages");
        assert_eq!(dropped.load(Relaxed), 100 - taken as u64);
        assert_eq!(rx.len(), taken);
    }
}
