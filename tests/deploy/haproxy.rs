//! deploy/haproxy.cfg: `haproxy -c`, then a real HAProxy running it in front of a host started
//! with the systemd unit's flags.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use super::systemd::unit_args_here;
use super::*;

#[test]
fn haproxy_accepts_the_config() {
    let haproxy = debian_tool("haproxy", "haproxy");
    let out = run_ok(
        Command::new(haproxy)
            .arg("-c")
            .arg("-f")
            .arg(deploy("haproxy.cfg")),
    );
    let said = printed(&out);
    assert!(
        !said.contains("[WARNING]") && !said.contains("[ALERT]"),
        "{said}"
    );
}

/// deploy/haproxy.cfg as it is, but for its addresses (the frontend on `front`, its servers
/// replaced by `servers`, each a host's address and its metrics address, which the checks
/// ask), its check interval, and its global maxconn, whose descriptors (two a connection) a
/// test machine may not allow.
pub(super) fn haproxy_cfg_here(front: SocketAddr, servers: &[(SocketAddr, SocketAddr)]) -> String {
    let cfg = read(&deploy("haproxy.cfg"));
    let mut out = String::new();
    let mut lines = 0;
    for line in cfg.lines() {
        let t = line.trim_start();
        if t.starts_with("maxconn ") {
            out += "    maxconn 1000\n";
        } else if t.starts_with("bind :7000") {
            out += &format!("    bind {front}\n");
        } else if t.starts_with("server ") {
            lines += 1;
            if lines == 1 {
                for (i, (server, metrics)) in servers.iter().enumerate() {
                    let port = metrics.port();
                    out += &format!("    server s{} {server} port {port}\n", i + 1);
                }
            }
        } else {
            // Checks every 100 ms instead of 2 s, so that a failing check shows within the test.
            out += &line.replace(" inter 2s ", " inter 100ms ");
            out += "\n";
        }
    }
    assert!(lines >= 2 && out.contains(" inter 100ms "));
    out
}

#[test]
fn haproxy_with_the_config_checks_readyz_and_passes_clients_to_the_units_host() {
    let dir = TempDir::new("haproxy-run");
    let args = unit_args_here(&dir, Some("127.0.0.1/32"));
    let mut server = Server::builder().no_default_listen().args(&args).start();
    let metrics = metrics_addr(&server);
    let front = free_addr();
    let cfg = dir.write(
        "haproxy.cfg",
        haproxy_cfg_here(front, &[(server.addr, metrics)]).as_bytes(),
    );
    let haproxy = Haproxy::start(&cfg, front);
    let (said, logged) = (&haproxy.said, &haproxy.logged);

    // Ten checks of /readyz on the metrics port, without a PROXY header: all must pass (two
    // failures in a row would mark the host down).
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        said.matching(|l| l.contains("is DOWN")).is_empty(),
        "{}",
        said.dump()
    );
    let mut client = Client::connect_from([127, 0, 0, 2], front);
    let welcome = client.recv_line(REPLY_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "no welcome through haproxy: {e:?}\n{}{}",
            said.dump(),
            logged.dump()
        )
    });
    assert!(welcome.starts_with("welcome guest"), "{welcome}");
    client.roundtrip("/nick ada", "you are ada");
    let own = client.local_addr().to_string();
    server.wait_for_log_where(LOG_TIMEOUT, "the client's own address", |l| {
        l.contains("connection opened") && l.contains(&own)
    });

    // SIGTERM: /readyz turns 503, then the host exits (with one idle client, at once), and the
    // checks mark it down.
    server.signal(libc::SIGTERM);
    let down = said.wait_for(Duration::from_secs(15), |l| l.contains("s1 is DOWN"));
    assert!(down.is_some(), "{}\n{}", said.dump(), logged.dump());
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(10))
            .and_then(|e| e.code()),
        Some(0)
    );
}
