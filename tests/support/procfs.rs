//! What /proc says about a process (status fields, VmRSS sampled in the background, start
//! time, sockets) and about TCP sockets (their queues and states).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Reads the numeric value of `Field:` from /proc/PID/status (VmRSS is in kB).
pub fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Samples a process's VmRSS in the background and remembers the maximum.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(rss) = proc_status_field(pid, "VmRSS") {
                    m.fetch_max(rss, Ordering::SeqCst);
                }
                // The sampling period, not a wait for some state.
                thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            max,
            handle: Some(handle),
        }
    }

    /// Stops sampling; returns the maximum RSS seen, in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// TCP sockets

/// The state number of a listening socket in /proc/net/tcp.
pub const TCP_LISTEN: u8 = 0x0A;

/// One TCP socket as the kernel lists it in /proc/net/tcp or /proc/net/tcp6 (this network
/// namespace's sockets, whichever process owns them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// Bytes written but not yet acknowledged by the peer.
    pub tx_queue: u64,
    /// Bytes received but not yet read by the socket's owner (a listener: connections waiting
    /// to be accepted).
    pub rx_queue: u64,
    pub inode: u64,
}

/// Every TCP socket of the network namespace, IPv4 and IPv6.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            // The first line names the columns.
            text.lines()
                .skip(1)
                .filter_map(parse_tcp_line)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...`
fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (tx, rx) = fields.get(4)?.split_once(':')?;
    Some(TcpSocket {
        local: parse_tcp_addr(fields.get(1)?)?,
        remote: parse_tcp_addr(fields.get(2)?)?,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        tx_queue: u64::from_str_radix(tx, 16).ok()?,
        rx_queue: u64::from_str_radix(rx, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// `0100007F:1F40` is 127.0.0.1:8000: the address is printed as 32-bit words, each the
/// native-endian number holding four bytes in network order; an IPv4-mapped IPv6 address
/// becomes the IPv4 one.
fn parse_tcp_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if ip.len() % 8 != 0 {
        return None;
    }
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        bytes.extend(u32::from_str_radix(&ip[i..i + 8], 16).ok()?.to_ne_bytes());
    }
    let ip = match <[u8; 4]>::try_from(bytes.as_slice()) {
        Ok(v4) => IpAddr::from(v4),
        Err(_) => Ipv6Addr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?).to_canonical(),
    };
    Some(SocketAddr::new(ip, port))
}

/// The inodes of the sockets process `pid` has open (its /proc/PID/fd links `socket:[N]`).
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Whether everything the client at `client` has sent to `server` so far was read by the
/// server's process: the client's side has nothing left unacknowledged and the server's side
/// nothing left unread. False while either socket is missing from the table.
pub fn sent_bytes_read(client: SocketAddr, server: SocketAddr) -> bool {
    let sockets = tcp_sockets();
    let side = |local, remote| {
        sockets
            .iter()
            .find(|s| s.local == local && s.remote == remote)
    };
    match (side(client, server), side(server, client)) {
        (Some(ours), Some(theirs)) => ours.tx_queue == 0 && theirs.rx_queue == 0,
        _ => false,
    }
}

#[test]
fn tcp_table_lines_parse() {
    // As a little-endian machine prints them.
    let v4 = "   0: 0100007F:1F40 0100007F:D431 01 00000002:0000000A 00:00000000 00000000     0 \
              0 12345 1 0000000000000000 20 4 30 10 -1";
    let s = parse_tcp_line(v4).expect("an IPv4 line");
    assert_eq!(s.local, "127.0.0.1:8000".parse().unwrap());
    assert_eq!(s.remote, "127.0.0.1:54321".parse().unwrap());
    assert_eq!(
        (s.state, s.tx_queue, s.rx_queue, s.inode),
        (1, 2, 10, 12345)
    );
    let mapped =
        "   1: 0000000000000000FFFF00000100007F:1F40 00000000000000000000000000000000:0000 \
                  0A 00000000:00000000 00:00000000 00000000     0        0 777 1";
    let s = parse_tcp_line(mapped).expect("an IPv6 line");
    assert_eq!(s.local, "127.0.0.1:8000".parse().unwrap());
    assert_eq!(s.remote, "[::]:0".parse().unwrap());
    assert_eq!((s.state, s.inode), (TCP_LISTEN, 777));
}

/// A connection of this process seen from both ends: unread bytes show in the receiver's queue
/// until it reads them; the listener is among this process's sockets.
#[test]
fn sent_bytes_read_sees_the_receivers_queue() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(server).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    let client_addr = client.local_addr().unwrap();
    assert!(sent_bytes_read(client_addr, server), "nothing sent yet");
    client.write_all(b"hello").unwrap();
    assert!(!sent_bytes_read(client_addr, server), "5 bytes unread");
    let mut buf = [0; 5];
    accepted.read_exact(&mut buf).unwrap();
    assert!(sent_bytes_read(client_addr, server), "all read");
    let mine = socket_inodes(std::process::id());
    let listening = tcp_sockets()
        .into_iter()
        .find(|s| s.local == server && s.state == TCP_LISTEN)
        .expect("the listener in the table");
    assert!(
        mine.contains(&listening.inode),
        "{listening:?} not in {mine:?}"
    );
}
