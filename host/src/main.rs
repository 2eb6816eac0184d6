//! The `sandport` binary: flags, logging and signals around the library; errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

use sandport::cli::{Cli, Command, LogFormat};
use sandport::{tools, Error, Server, Shutdown};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.serve.log_format);
    raise_fd_limit();
    let result = match cli.command {
        None => serve(cli),
        Some(Command::Check { plugin, load }) => load
            .config_for_one(&plugin)
            .and_then(|cfg| tools::check(&cfg)),
        Some(Command::Call {
            plugin,
            message,
            file,
            load,
        }) => load.config_for_one(&plugin).and_then(|cfg| {
            let message = match (message, file) {
                (Some(m), _) => m.into_bytes(),
                (None, Some(f)) => std::fs::read(&f).map_err(|e| {
                    Error::config(format!("--file {}: cannot read it: {e}", f.display()))
                })?,
                (None, None) => {
                    return Err(Error::config("call needs --message TEXT or --file PATH"))
                }
            };
            tools::call(&cfg, &message)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code() as u8;
            // Each error's own text, then its causes': `plugin X: it cannot be compiled: why`.
            eprintln!("error: {:#}", anyhow::Error::new(e));
            ExitCode::from(code)
        }
    }
}

fn serve(cli: Cli) -> Result<(), Error> {
    let config = cli.serve.into_config()?;
    let server = Server::new(config.clone())?;
    let listener = server.bind()?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Runtime(anyhow::anyhow!("cannot read the listening address: {e}")))?;

    let shutdown = Shutdown::new();
    watch_signals(shutdown.clone())?;
    tracing::info!(
        workers = config.workers,
        isolation = %config.isolation,
        framing = %config.framing,
        plugins = config.plugins.len(),
        "listening on {addr}"
    );
    server.run(listener, shutdown)
}

/// The first SIGINT/SIGTERM starts a graceful shutdown; a second one exits at once.
fn watch_signals(shutdown: Shutdown) -> Result<(), Error> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Error::Runtime(anyhow::anyhow!("cannot handle signals: {e}")))?;
    std::thread::Builder::new()
        .name("sandport-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                if seen == 1 {
                    tracing::info!(signal = name, "shutting down");
                    shutdown.trigger();
                } else {
                    tracing::warn!(signal = name, "second signal: exiting now");
                    std::process::exit(130);
                }
            }
        })
        .map_err(|e| Error::Runtime(anyhow::anyhow!("cannot start the signal thread: {e}")))?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Every connection is a file descriptor: use all the process may have, not the soft default.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
