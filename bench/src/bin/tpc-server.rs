//! `tpc-server`: the textbook thread-per-connection echo server sandport replaces, as a baseline.
//!
//! `accept()` in a loop, `std::thread::spawn` for every client, a blocking read loop in that
//! thread, each message echoed back with the same framing as sandport's `--framing`. No thread
//! pool and no limits, on purpose: that is what the benchmark compares against. The only
//! departure from the textbook is `TCP_NODELAY` on accepted sockets, which sandport sets too, so
//! that the comparison measures the threading model and not Nagle's algorithm.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use clap::{Parser, ValueEnum};

/// Thread-per-connection echo server (benchmark baseline).
#[derive(Debug, Parser)]
#[command(name = "tpc-server", version, about)]
struct Args {
    /// Address to accept clients on (port 0 picks a free one; printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: SocketAddr,

    /// How messages are delimited, as sandport's --framing.
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    framing: Framing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Framing {
    /// Every read is echoed as it is.
    Raw,
    /// Messages end with `\n`; each line is echoed with its newline.
    Line,
    /// A 4-byte big-endian length, then that many bytes; echoed framed the same way.
    Length,
}

fn main() {
    let args = Args::parse();
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            std::process::exit(2);
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("listening on {addr} framing={:?}", args.framing),
        Err(e) => eprintln!("error: cannot read the listening address: {e}"),
    }
    let framing = args.framing;
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    // The client going away is the normal end of a session.
                    let _ = serve(&stream, framing);
                });
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
}

/// Echoes every message of one client until it closes the connection.
fn serve(stream: &TcpStream, framing: Framing) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    match framing {
        Framing::Raw => {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write_all(&buf[..n])?;
            }
        }
        Framing::Line => {
            let mut line = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    return Ok(());
                }
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                writer.write_all(&line)?;
            }
        }
        Framing::Length => {
            let mut frame = Vec::new();
            loop {
                let mut prefix = [0u8; 4];
                match reader.read_exact(&mut prefix) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
                let len = u32::from_be_bytes(prefix) as usize;
                frame.clear();
                frame.extend_from_slice(&prefix);
                frame.resize(4 + len, 0);
                reader.read_exact(&mut frame[4..])?;
                writer.write_all(&frame)?;
            }
        }
    }
}
