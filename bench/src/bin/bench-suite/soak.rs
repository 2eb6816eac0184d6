//! The soak scenario: one server under steady load for a long time (10 minutes by default),
//! with connections churning, sampled every interval: throughput, p99, errors, RSS, threads and
//! open files must hold steady (no leak, no slowdown, no error).

use std::fmt::Write as _;

use crate::scenarios::{median, thousands, Ctx, LoadSpec, Section, Target};
use crate::server::{self, Server};

/// One interval's sample.
struct Sample {
    at_secs: f64,
    msgs_per_sec: f64,
    p99_us: f64,
    errors: u64,
    rss_kib: u64,
    threads: u64,
    fds: usize,
}

/// `total_secs` of load in intervals of `interval_secs`: each interval a fresh `sandport-load`
/// run (32 ping-pong clients and 200 idle ones, all reconnected), then the server's /proc.
pub fn soak(ctx: &mut Ctx, total_secs: f64, interval_secs: f64) -> Section {
    let mut body = String::new();
    let mut targets = Vec::new();
    let title = "Soak: steady load with churning connections".to_string();
    let iso = "message";
    let mut running = match server::start(&ctx.bins, &Server::Sandport(iso), "line", &[]) {
        Ok(r) => r,
        Err(e) => {
            ctx.failures
                .push(format!("soak: the server did not start: {e}"));
            return Section {
                title,
                body,
                targets,
            };
        }
    };
    let spec = LoadSpec {
        idle: 200,
        ..LoadSpec::ping_pong(32, 64)
    };
    let (saved_secs, saved_warmup) = (ctx.secs, ctx.warmup);
    ctx.secs = interval_secs;
    ctx.warmup = 0.2;
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let pid = running.pid();
    // The baseline is taken once the first interval's clients are gone: a server that has not
    // served yet may still open files lazily (a smoke run saw 14 before, 16 after and steady).
    let mut fds_before = usize::MAX;
    let started = std::time::Instant::now();
    let mut samples = Vec::new();
    let mut round = 0;
    while started.elapsed().as_secs_f64() < total_secs {
        round += 1;
        let what = format!("soak, interval {round}");
        if let Some(died) = running.exited() {
            ctx.failures
                .push(format!("{what}: the server died: {died}"));
            break;
        }
        let Some(r) = ctx.run_load(running.addr, &spec, &what) else {
            continue;
        };
        let proc = server::proc_stats(pid);
        samples.push(Sample {
            at_secs: started.elapsed().as_secs_f64(),
            msgs_per_sec: r.msgs_per_sec,
            p99_us: r.latency_us.p99,
            errors: r.errors.total(),
            rss_kib: proc.as_ref().map_or(0, |p| p.rss_kib),
            threads: proc.as_ref().map_or(0, |p| p.threads),
            fds: fds(pid),
        });
        if fds_before == usize::MAX {
            fds_before = settled_fds(&fds, pid);
        }
        eprintln!(
            "bench: {what}: {} msg/s, RSS {} MiB, {} fds",
            thousands(r.msgs_per_sec),
            samples.last().map_or(0, |s| s.rss_kib / 1024),
            samples.last().map_or(0, |s| s.fds)
        );
    }
    ctx.secs = saved_secs;
    ctx.warmup = saved_warmup;
    // Idle clients are gone once the last run ends; let the server notice their closes.
    let fds_after = settled_fds(&fds, pid);
    running.stop();
    if samples.len() < 2 {
        ctx.failures.push("soak: fewer than two samples".into());
        return Section {
            title,
            body,
            targets,
        };
    }

    let _ = writeln!(
        body,
        "`sandport --plugin plugins/echo.wasm --isolation {iso} --workers 2` for {:.0} s: every \
         {:.0} s a new `sandport-load` run (32 ping-pong clients of 64 B and 200 idle ones, all \
         connected anew, so {} connections were opened and closed in all), then the server's \
         /proc. One row per minute (the sample closest to it).\n",
        total_secs,
        interval_secs,
        thousands(samples.len() as f64 * 232.0)
    );
    let _ = writeln!(
        body,
        "| time | msg/s | p99 | errors | RSS | threads | open files |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut next_row = 0.0;
    for (i, s) in samples.iter().enumerate() {
        if s.at_secs >= next_row || i == samples.len() - 1 {
            let _ = writeln!(
                body,
                "| {:.0} s | {} | {:.0} µs | {} | {:.1} MiB | {} | {} |",
                s.at_secs,
                thousands(s.msgs_per_sec),
                s.p99_us,
                s.errors,
                s.rss_kib as f64 / 1024.0,
                s.threads,
                s.fds
            );
            next_row = (s.at_secs / 60.0).floor() * 60.0 + 60.0;
        }
    }
    let _ = writeln!(
        body,
        "\nOpen files: {fds_before} once the first interval's clients had gone, {fds_after} after \
         the last one (the listener, the \
         event loops and the log)."
    );

    let half = samples.len() / 2;
    let (first, last) = samples.split_at(half);
    let rate = |s: &[Sample]| median(s.iter().map(|x| x.msgs_per_sec).collect());
    let rss = |s: &[Sample]| median(s.iter().map(|x| x.rss_kib as f64).collect());
    let errors: u64 = samples.iter().map(|s| s.errors).sum();
    let ratio = rate(last) / rate(first);
    targets.push(Target {
        what: "soak: throughput, second half vs first half (medians)".into(),
        target: ">= 0.90x".into(),
        measured: format!("{ratio:.2}x"),
        pass: Some(ratio >= 0.90),
    });
    let grew = (rss(last) - rss(first)) / 1024.0;
    targets.push(Target {
        what: "soak: RSS growth, second half vs first half (medians)".into(),
        target: "<= 16 MiB".into(),
        measured: format!("{grew:+.1} MiB"),
        pass: Some(grew <= 16.0),
    });
    targets.push(Target {
        what: "soak: errors and open files".into(),
        target: "0 errors; open files back to the start".into(),
        measured: format!("{errors} errors; {fds_before} -> {fds_after} open files"),
        pass: Some(errors == 0 && fds_after <= fds_before),
    });
    if errors > 0 {
        ctx.failures.push(format!("soak: {errors} errors"));
    }
    Section {
        title,
        body,
        targets,
    }
}

/// The process's open files once its closed clients are gone: the count once it has not
/// changed for 200 ms (at most 5 s).
fn settled_fds(fds: &impl Fn(u32) -> usize, pid: u32) -> usize {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut last = fds(pid);
    while std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = fds(pid);
        if now == last {
            break;
        }
        last = now;
    }
    last
}
