//! The server's output, captured line by line, and the fields of its text log lines.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Lines read from a child's stream by a background thread, with a condvar to wait on.
#[derive(Clone, Default)]
pub struct LogBuffer {
    inner: Arc<(Mutex<LogState>, Condvar)>,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    eof: bool,
}

/// Removes ANSI escape sequences (colours), in case the host colours its log.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters until a final byte in 0x40..=0x7e.
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

impl LogBuffer {
    /// Spawns a thread that reads `stream` line by line into the buffer.
    pub fn capture<R: Read + Send + 'static>(stream: R) -> (LogBuffer, JoinHandle<()>) {
        let buf = LogBuffer::default();
        let b = buf.clone();
        let handle = thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        let text = strip_ansi(&String::from_utf8_lossy(&line));
                        let (lock, cv) = &*b.inner;
                        lock.lock().unwrap().lines.push(text);
                        cv.notify_all();
                    }
                }
            }
            let (lock, cv) = &*b.inner;
            lock.lock().unwrap().eof = true;
            cv.notify_all();
        });
        (buf, handle)
    }

    /// A copy of every line captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().lines.clone()
    }

    /// Whether the stream reached EOF (the process closed it, usually by exiting).
    pub fn eof(&self) -> bool {
        self.inner.0.lock().unwrap().eof
    }

    /// Waits until a line satisfying `pred` has been captured; returns it, or `None` on timeout
    /// or when the stream ended without such a line.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inner;
        let mut state = lock.lock().unwrap();
        let mut checked = 0;
        loop {
            if let Some(l) = state.lines[checked..].iter().find(|l| pred(l.as_str())) {
                return Some(l.clone());
            }
            checked = state.lines.len();
            if state.eof {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = cv.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Every captured line satisfying `pred`.
    pub fn matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.inner
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| pred(l.as_str()))
            .cloned()
            .collect()
    }

    pub fn dump(&self) -> String {
        self.lines().join("\n")
    }
}

/// Extracts the value of `name=VALUE` from a text-format log line (quotes removed), e.g.
/// `log_field("... conn=3 messages=2", "messages") == Some("2")`.
pub fn log_field(line: &str, name: &str) -> Option<String> {
    let pat = format!("{name}=");
    let mut search = 0;
    while let Some(pos) = line[search..].find(&pat) {
        let start = search + pos;
        let at_boundary = start == 0 || {
            let prev = line[..start].chars().next_back().unwrap();
            !(prev.is_alphanumeric() || prev == '_' || prev == '.')
        };
        let value_start = start + pat.len();
        if at_boundary {
            let rest = &line[value_start..];
            if let Some(stripped) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = stripped.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                out.push(n)
                            }
                        }
                        '"' => break,
                        c => out.push(c),
                    }
                }
                return Some(out);
            }
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            return Some(rest[..end].to_string());
        }
        search = value_start;
    }
    None
}
