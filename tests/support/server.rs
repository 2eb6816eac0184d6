//! A running `sandport` child process: its address, log and exit, and what /proc says of it.

use std::net::SocketAddr;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::Duration;

use super::launch::wait_child;
use super::{
    log_field, proc_status_field, sent_bytes_read, socket_inodes, tcp_sockets, wait_until, Client,
    LogBuffer, RssSampler, ServerBuilder, TempDir, LOG_TIMEOUT, REPLY_TIMEOUT, TCP_LISTEN,
};

/// A running `sandport`; killed (SIGKILL) on drop. On a panicking test its log is printed.
pub struct Server {
    pub(super) child: Child,
    pub addr: SocketAddr,
    pub logs: LogBuffer,
    pub stdout: LogBuffer,
    pub(super) exit: Option<ExitStatus>,
    pub(super) _workdir: TempDir,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects a new client.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits for a log line containing `pattern`; panics with the whole log on timeout.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_log_where(timeout, &format!("a line containing {pattern:?}"), |l| {
            l.contains(pattern)
        })
    }

    /// Waits for a log line satisfying `pred`; panics with `what` and the whole log on timeout.
    pub fn wait_for_log_where(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        match self.logs.wait_for(timeout, pred) {
            Some(l) => l,
            None => panic!(
                "no log line matched ({what}) within {timeout:?}\n--- server log ---\n{}",
                self.logs.dump()
            ),
        }
    }

    /// Waits for a log line containing `pattern` (see [`Self::wait_for_log`]) and checks that it
    /// is tagged with `plugin`, the plugin that logged it.
    pub fn wait_for_plugin_log(&self, pattern: &str, plugin: &str) -> String {
        let line = self.wait_for_log(pattern, LOG_TIMEOUT);
        assert!(
            line.contains(plugin),
            "log line not tagged with the plugin {plugin}: {line}"
        );
        line
    }

    /// Waits for the `connection closed` line of connection `id` (matched on the `conn=` field).
    pub fn wait_for_close_log(&self, id: u64, timeout: Duration) -> String {
        let id = id.to_string();
        self.wait_for_log_where(timeout, &format!("connection closed conn={id}"), |l| {
            l.contains("connection closed") && log_field(l, "conn").as_deref() == Some(&id)
        })
    }

    /// Every log line so far containing `pattern`.
    pub fn log_lines_containing(&self, pattern: &str) -> Vec<String> {
        self.logs.matching(|l| l.contains(pattern))
    }

    /// Panics, with the log, if a `plugin call failed` line was logged so far.
    pub fn assert_no_call_failed(&self) {
        assert!(
            self.log_lines_containing("plugin call failed").is_empty(),
            "a plugin call failed:\n{}",
            self.logs.dump()
        );
    }

    /// Waits until the server has read every byte `client` sent so far (the kernel holds none
    /// of them any more, on either side). A server reads a message right before handling it,
    /// so once a message that makes the plugin work for a while is read, that call is running.
    pub fn wait_until_read(&self, client: &Client) {
        let (from, to) = (client.local_addr(), self.addr);
        wait_until(
            &format!("the server reads what {from} sent"),
            REPLY_TIMEOUT,
            || sent_bytes_read(from, to),
        );
    }

    /// Whether the server process still has its listening socket open.
    pub fn is_listening(&self) -> bool {
        let mine = socket_inodes(self.pid());
        tcp_sockets()
            .iter()
            .any(|s| s.state == TCP_LISTEN && s.local == self.addr && mine.contains(&s.inode))
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait_child(&mut self.child, timeout);
        }
        self.exit
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Number of threads of the server process (from /proc/PID/status).
    pub fn threads(&self) -> u64 {
        proc_status_field(self.pid(), "Threads")
            .unwrap_or_else(|| panic!("no Threads in /proc/{}/status", self.pid()))
    }

    /// Resident set size of the server process in KiB (from /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.pid(), "VmRSS")
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid()))
    }

    /// Starts sampling the server's RSS every 10ms in the background.
    pub fn rss_sampler(&self) -> RssSampler {
        RssSampler::start(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            // Give the reader thread a moment to drain the pipe, then show the log.
            self.logs.wait_for(Duration::from_millis(500), |_| false);
            eprintln!(
                "--- sandport log (pid {}, {}) ---\n{}\n--- end of sandport log ---",
                self.child.id(),
                self.addr,
                self.logs.dump()
            );
            let out = self.stdout.dump();
            if !out.is_empty() {
                eprintln!("--- sandport stdout ---\n{out}\n--- end of stdout ---");
            }
        }
    }
}
