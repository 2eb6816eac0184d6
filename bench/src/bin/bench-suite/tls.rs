//! The `tls` scenario (issue 14): echo throughput over TLS against plain TCP on the same servers
//! in the same run (interleaved), full handshakes per second against new plain connections per
//! second, and the memory one more idle connection costs, TLS and plain.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use sandport_bench::tls::{client_config, session};

use crate::scenarios::{median, progress, thousands, Ctx, LoadSpec, Section};
use crate::server::{self, Running, Server};

/// One server under test: which, and whether it speaks TLS.
struct Case {
    server: Server,
    tls: bool,
}

impl Case {
    fn label(&self) -> String {
        let t = if self.tls { "TLS" } else { "plain TCP" };
        format!("{}, {t}", self.server.label())
    }
}

pub fn tls(ctx: &mut Ctx) -> Section {
    let mut body = String::new();
    let dir = ctx.target_dir.join("bench-tls");
    let (cert, key) = match certificate(&dir) {
        Ok(files) => files,
        Err(e) => {
            ctx.failures
                .push(format!("tls: cannot make a certificate: {e}"));
            return section(body);
        }
    };
    let tls_args = vec![
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    let cases = [
        Case {
            server: Server::Native,
            tls: false,
        },
        Case {
            server: Server::Native,
            tls: true,
        },
        Case {
            server: Server::Sandport("message"),
            tls: false,
        },
        Case {
            server: Server::Sandport("message"),
            tls: true,
        },
    ];
    let mut running = Vec::new();
    for c in &cases {
        let extra = if c.tls { tls_args.clone() } else { Vec::new() };
        match server::start(&ctx.bins, &c.server, "line", &extra) {
            Ok(r) => running.push(r),
            Err(e) => {
                ctx.failures
                    .push(format!("tls: {} did not start: {e}", c.label()));
                return section(body);
            }
        }
    }
    let conns = if ctx.smoke { 4 } else { 64 };
    let spec = LoadSpec::ping_pong(conns, 64);
    let load_tls = ["--tls-ca".to_string(), cert.display().to_string()];
    let mut tput: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    let mut handshakes: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let config = client_config(Some(&cert)).expect("the bench CA loads");
    for round in 1..=ctx.rounds {
        for (i, (c, r)) in cases.iter().zip(&running).enumerate() {
            let what = format!("tls, {}, round {round}", c.label());
            let extra = if c.tls { &load_tls[..] } else { &[][..] };
            if let Some(rep) = ctx.run_load_with(r.addr, &spec, &what, extra) {
                progress(&what, round, ctx.rounds, &rep);
                ctx.smoke_check(&what, &rep);
                tput[i].push((rep.msgs_per_sec, rep.latency_us.p99));
            }
            let tls = c.tls.then_some(&config);
            match connections_per_sec(r.addr, tls, ctx.client_threads, ctx.secs) {
                Ok(n) => {
                    eprintln!("bench: {what}: {} new connections/s", thousands(n));
                    handshakes[i].push(n);
                }
                Err(e) => ctx.failures.push(format!("{what}: new connections: {e}")),
            }
        }
    }
    let _ = writeln!(
        body,
        "The same servers with and without `--tls-cert` (TLS 1.3, ECDSA P-256 certificate, \
         rustls with *ring* on both sides), interleaved round after round. Echo: 64-byte \
         messages, ping-pong, {conns} connections, `--framing line` (`sandport-load --tls-ca`). \
         New connections: {} client threads each connecting, sending one line, reading its \
         echo and closing, for {} s; over TLS every one is a full handshake (no resumption).\n",
        ctx.client_threads, ctx.secs
    );
    let _ = writeln!(
        body,
        "| server | transport | echo msg/s | TLS vs plain | echo p99 µs | new connections/s | TLS vs plain |"
    );
    let _ = writeln!(body, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, c) in cases.iter().enumerate() {
        let msgs = median(tput[i].iter().map(|t| t.0).collect());
        let p99 = median(tput[i].iter().map(|t| t.1).collect());
        let conns_s = median(handshakes[i].clone());
        let (vs_msgs, vs_conns) = if c.tls {
            let plain_msgs = median(tput[i - 1].iter().map(|t| t.0).collect());
            let plain_conns = median(handshakes[i - 1].clone());
            (
                format!("{:.2}x", msgs / plain_msgs),
                format!("{:.2}x", conns_s / plain_conns),
            )
        } else {
            ("".into(), "".into())
        };
        let _ = writeln!(
            body,
            "| {} | {} | {} | {vs_msgs} | {p99:.1} | {} | {vs_conns} |",
            c.server.label(),
            if c.tls { "TLS" } else { "plain TCP" },
            thousands(msgs),
            thousands(conns_s),
        );
    }
    let n = if ctx.smoke { 40 } else { 1000 };
    let _ = writeln!(
        body,
        "\nMemory: the server's RSS growth per connection over the second half of {n} \
         connections that each sent one message and then stay quiet (read 1 s after the last \
         reply), `{}`:\n",
        cases[2].server.label()
    );
    let _ = writeln!(body, "| transport | RSS per idle connection |");
    let _ = writeln!(body, "| --- | ---: |");
    for i in [2, 3] {
        let tls = cases[i].tls.then_some(&config);
        match idle_cost(&running[i], n, tls) {
            Ok(kib) => {
                let _ = writeln!(
                    body,
                    "| {} | {kib:.1} KiB |",
                    if cases[i].tls { "TLS" } else { "plain TCP" }
                );
            }
            Err(e) => ctx.failures.push(format!("tls: idle cost: {e}")),
        }
    }
    for r in running {
        r.stop();
    }
    section(body)
}

fn section(body: String) -> Section {
    Section {
        title: "TLS: echo, handshakes and idle memory against plain TCP".into(),
        body,
        targets: Vec::new(),
    }
}

/// A self-signed ECDSA P-256 certificate for `localhost` (not a CA), and its key, as files.
fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&k, key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok((c, k))
}

/// A blocking client: TCP, or TLS on it with its handshake done.
enum Blocking {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Blocking {
    fn connect(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> std::io::Result<Blocking> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(match tls {
            None => Blocking::Plain(tcp),
            Some(config) => {
                let mut s = StreamOwned::new(session(config), tcp);
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Blocking::Tls(Box::new(s))
            }
        })
    }

    /// Sends `line` and checks its echo.
    fn echo(&mut self, line: &[u8]) -> std::io::Result<()> {
        let io: &mut dyn ReadWrite = match self {
            Blocking::Plain(s) => s,
            Blocking::Tls(s) => &mut **s,
        };
        io.write_all(line)?;
        let mut back = vec![0; line.len()];
        io.read_exact(&mut back)?;
        if back != line {
            return Err(std::io::Error::other("a wrong echo"));
        }
        Ok(())
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// New connections per second over `secs`: connect (and handshake), one echo, close.
fn connections_per_sec(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    threads: usize,
    secs: f64,
) -> Result<f64, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, done, tls) = (stop.clone(), done.clone(), tls.cloned());
            std::thread::spawn(move || -> Result<(), String> {
                while !stop.load(Relaxed) {
                    let mut c = Blocking::connect(addr, tls.as_ref()).map_err(|e| e.to_string())?;
                    c.echo(b"handshake\n").map_err(|e| e.to_string())?;
                    done.fetch_add(1, Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Relaxed);
    let n = done.load(Relaxed) as f64 / started.elapsed().as_secs_f64();
    for w in workers {
        w.join().map_err(|_| "a client thread panicked")??;
    }
    Ok(n)
}

/// The server's RSS growth per connection over the second half of `n` quiet connections that
/// each sent one message, in KiB.
fn idle_cost(r: &Running, n: usize, tls: Option<&Arc<ClientConfig>>) -> Result<f64, String> {
    let rss = || server::proc_stats(r.pid()).map(|s| s.rss_kib as f64);
    let open = |k: usize| -> Result<Vec<Blocking>, String> {
        (0..k)
            .map(|_| {
                let mut c = Blocking::connect(r.addr, tls).map_err(|e| e.to_string())?;
                c.echo(b"idle-probe\n").map_err(|e| e.to_string())?;
                Ok(c)
            })
            .collect()
    };
    let settle = Duration::from_secs(1);
    let first = open(n / 2)?;
    std::thread::sleep(settle);
    let before = rss().ok_or("cannot read the server's RSS")?;
    let second = open(n - n / 2)?;
    std::thread::sleep(settle);
    let after = rss().ok_or("cannot read the server's RSS")?;
    drop((first, second));
    Ok((after - before).max(0.0) / (n - n / 2) as f64)
}
