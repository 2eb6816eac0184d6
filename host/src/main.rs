//! The `sandport` binary: flags, logging and signals around the library; errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use sandport::cli::{Cli, Command, LogFormat};
use sandport::metrics::Endpoint;
use sandport::{error, tools, Error, Server};

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
        Some(Command::Replay { replay, load }) => {
            let capture = replay.capture.clone();
            replay
                .config(load)
                .and_then(|cfg| sandport::replay::replay(&cfg, &capture))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error::report(&e));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn serve(cli: Cli) -> Result<(), Error> {
    let server = Server::new(cli.serve.into_config()?)?;
    let listener = server.bind()?;
    let addr = listener.local_addr().map_err(|e| {
        Error::Runtime(anyhow::Error::new(e).context("cannot read the listening address"))
    })?;
    let endpoint = server
        .config()
        .metrics_listen
        .map(Endpoint::bind)
        .transpose()?;
    server.shutdown().on_signals()?;
    let hooks: Vec<sandport::reload::Hook> = vec![
        Box::new(server.reload_trigger()),
        Box::new(server.on_hangup()),
    ];
    sandport::reload::on_sighup(hooks)?;
    if let Some(endpoint) = endpoint {
        let at = endpoint.local_addr();
        endpoint.serve(server.exporter(), server.shutdown())?;
        tracing::info!("metrics served on http://{at}/metrics (and /healthz, /readyz)");
    }
    let config = server.config();
    tracing::info!(
        workers = config.workers,
        isolation = %config.isolation,
        framing = %config.framing,
        plugins = config.plugins.len(),
        "listening on {addr}"
    );
    server.run(listener)
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
