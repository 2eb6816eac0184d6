//! The recording thread: takes records from the workers' channel and appends them to capture
//! files in the `--record` folder, starting a new file every segment and deleting the oldest
//! files once the folder holds more than `--record-max-bytes`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::format::{self, Record, HEADER_LEN};

/// With nothing to write for this long, what is buffered goes to the file (so a capture is
/// readable moments after the traffic stops).
const FLUSH_WHEN_IDLE: Duration = Duration::from_millis(100);

/// The capture files of a folder, oldest first (names sort by run, then sequence).
pub fn captures_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "spcap"))
        .collect();
    files.sort();
    Ok(files)
}

/// Appends records to segment files of about `segment` bytes, keeping the folder within `cap`.
pub struct Writer {
    dir: PathBuf,
    run: u64,
    cap: u64,
    segment: u64,
    seq: u64,
    file: Option<(BufWriter<File>, u64)>,
    /// The recorders' count of payload bytes queued: lowered as records are taken.
    queued: Arc<AtomicUsize>,
}

impl Writer {
    pub fn new(dir: &Path, run: u64, cap: u64, queued: Arc<AtomicUsize>) -> Writer {
        Writer {
            dir: dir.to_path_buf(),
            run,
            cap,
            // Eight files make the cap: deleting the oldest frees an eighth of it.
            segment: (cap / 8).clamp(4 << 10, 64 << 20),
            seq: 0,
            file: None,
            queued,
        }
    }

    /// Writes records until every sender is gone, then flushes.
    pub fn run(mut self, rx: Receiver<Record>) {
        loop {
            let res = match rx.recv_timeout(FLUSH_WHEN_IDLE) {
                Ok(r) => {
                    self.queued.fetch_sub(r.event.payload_len(), Relaxed);
                    self.write(&r)
                }
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Err(e) = res {
                // Recording is best effort: serving goes on, the next record tries a new file.
                tracing::warn!(dir = %self.dir.display(), "recording failed: {e}");
                self.file = None;
            }
        }
        if let Err(e) = self.flush() {
            tracing::warn!(dir = %self.dir.display(), "recording failed: {e}");
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some((f, _)) => f.flush(),
            None => Ok(()),
        }
    }

    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        if self.file.as_ref().is_none_or(|(_, n)| *n >= self.segment) {
            self.rotate()?;
        }
        let (f, n) = self.file.as_mut().expect("opened above");
        *n += format::write_record(f, r)? as u64;
        Ok(())
    }

    /// Starts the next file, then deletes the oldest ones while the folder is over the cap.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some((mut f, _)) = self.file.take() {
            f.flush()?;
        }
        self.seq += 1;
        let path = self
            .dir
            .join(format!("capture-{:016}-{:06}.spcap", self.run, self.seq));
        let mut f = BufWriter::new(File::create(&path)?);
        format::write_header(&mut f, self.run)?;
        self.file = Some((f, HEADER_LEN as u64));
        let files = captures_in(&self.dir)?;
        let sizes: Vec<u64> = (files.iter())
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .collect();
        let mut total: u64 = sizes.iter().sum();
        for (old, size) in files.iter().zip(sizes).filter(|(p, _)| **p != path) {
            if total + self.segment <= self.cap {
                break;
            }
            std::fs::remove_file(old)?;
            total -= size;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::format::Event;

    #[test]
    fn the_folder_stays_within_its_cap_by_deleting_the_oldest_files() {
        let dir = std::env::temp_dir().join(format!("sandport-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cap = 64 << 10;
        let mut w = Writer::new(&dir, 1, cap, Arc::default());
        for i in 0..2000u64 {
            let event = Event::Message(vec![b'x'; 100]);
            w.write(&Record {
                conn: i,
                at_us: i,
                event,
            })
            .unwrap();
        }
        w.flush().unwrap();
        let files = captures_in(&dir).unwrap();
        let total: u64 = files
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(
            total <= cap + (4 << 10),
            "{total} bytes in {} files",
            files.len()
        );
        assert!(files.len() > 1);
        // The newest records survive; each file reads back whole.
        let last = format::read(&std::fs::read(files.last().unwrap()).unwrap()).unwrap();
        assert_eq!(last.records.last().unwrap().conn, 1999);
        assert!(!last.cut_short);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
