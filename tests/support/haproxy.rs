//! A real HAProxy (Debian package `haproxy`) running a config a test wrote: in the foreground,
//! waited for until its frontend accepts connections, killed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{debian_tool, eventually, LogBuffer};

/// A running `haproxy`; what it says on stderr and what it logs on stdout.
pub struct Haproxy {
    pub said: LogBuffer,
    pub logged: LogBuffer,
    child: Child,
}

impl Haproxy {
    /// Starts `haproxy -db -f cfg` and waits until `front` accepts connections; fails the test
    /// with what it said if it exits or never listens.
    pub fn start(cfg: &Path, front: SocketAddr) -> Haproxy {
        // -db: in the foreground, no daemon, so killing the child stops it.
        let mut child = Command::new(debian_tool("haproxy", "haproxy"))
            .arg("-db")
            .arg("-f")
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts");
        let (said, _) = LogBuffer::capture(child.stderr.take().unwrap());
        let (logged, _) = LogBuffer::capture(child.stdout.take().unwrap());
        let mut haproxy = Haproxy {
            said,
            logged,
            child,
        };
        let listening = eventually(Duration::from_secs(10), || {
            if let Ok(Some(status)) = haproxy.child.try_wait() {
                panic!("haproxy exited: {status}\n{}", haproxy.said.dump());
            }
            TcpStream::connect(front).ok()
        });
        assert!(
            listening.is_some(),
            "haproxy never listened on {front}\n{}",
            haproxy.said.dump()
        );
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 the OS just handed out and took back, for a frontend: free, unless
/// another test takes it in between (then haproxy fails to bind, and the test says so).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
