//! The `payshim` command line: run, check-config, hash-key, audit verify.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

use payshim::config::{self, Config};

/// The documented dev default, built in so `payshim` runs on a fresh machine.
const EMBEDDED_CONFIG: &str = include_str!("../config/payshim.toml");
const DEFAULT_CONFIG: &str = "config/payshim.toml";

/// mimalloc rather than glibc malloc: with rate limits on, every payment adds keys to
/// long-lived maps while requests allocate and free short-lived buffers, and glibc's
/// bins fragment under that mix (`_int_malloc` tripled in bench/ profiles).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "payshim",
    version,
    about = "TLS-terminating payment proxy for the Moltin / Elastic Path API"
)]
struct Cli {
    /// Config file (TOML). Default: config/payshim.toml, else the embedded dev default.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and print it with every secret masked.
    CheckConfig,
    /// Read a storefront key from stdin and print its SHA-256 for `api_key_sha256`.
    HashKey,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the HMAC chain across FILES (oldest first).
    Verify { files: Vec<PathBuf> },
}

fn main() -> std::process::ExitCode {
    payshim::redact::install_panic_hook();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.config.as_deref()),
        Some(Command::CheckConfig) => check_config(cli.config.as_deref()),
        Some(Command::HashKey) => hash_key(),
        Some(Command::Audit {
            command: AuditCommand::Verify { files },
        }) => audit_verify(cli.config.as_deref(), &files),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("payshim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match path {
        Some(p) => config::load(Some(p), &env)?,
        None if Path::new(DEFAULT_CONFIG).exists() => {
            config::load(Some(Path::new(DEFAULT_CONFIG)), &env)?
        }
        None => config::from_toml(EMBEDDED_CONFIG, &env)?,
    };
    Ok(config)
}

fn run(path: Option<&Path>) -> anyhow::Result<std::process::ExitCode> {
    disable_core_dumps();
    let config = load_config(path)?;
    // Declared before the runtime, so dropped after it: the runtime's last lines are in
    // the final batch.
    let _log = payshim::logging::init(&config.log).context("log pipeline check")?;
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let runtime = runtime_builder(workers)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listeners = payshim::Listeners::bind(&config).await.with_context(|| {
            format!("binding {} / {}", config.server.listen, config.admin.listen)
        })?;
        payshim::run(config, listeners, shutdown_signal()).await?;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// One worker: tokio's current-thread scheduler, which skips the multi-thread
/// scheduler's cross-worker bookkeeping that a single worker never uses.
fn runtime_builder(workers: usize) -> tokio::runtime::Builder {
    if workers == 1 {
        return tokio::runtime::Builder::new_current_thread();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers);
    builder
}

/// Resolves on SIGTERM (systemd, Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Memory holds card data: a core dump must never write it to disk.
fn disable_core_dumps() {
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0) {
        eprintln!("payshim: warning: could not disable core dumps: {e}");
    }
}

fn check_config(path: Option<&Path>) -> anyhow::Result<std::process::ExitCode> {
    let config = load_config(path)?;
    print!("{config}");
    eprintln!("config OK");
    Ok(std::process::ExitCode::SUCCESS)
}

fn hash_key() -> anyhow::Result<std::process::ExitCode> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the key from stdin")?;
    let key = input.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!key.is_empty(), "no key on stdin");
    anyhow::ensure!(
        key.len() >= 16,
        "key too short: use at least 16 random characters"
    );
    println!("{}", hex::encode(Sha256::digest(key.as_bytes())));
    Ok(std::process::ExitCode::SUCCESS)
}

/// Verifies the chain; the key comes from the config (`audit.key`, usually through
/// `PAYSHIM__AUDIT__KEY`). With no FILES, verifies the configured log and its rotations.
fn audit_verify(path: Option<&Path>, files: &[PathBuf]) -> anyhow::Result<std::process::ExitCode> {
    use secrecy::ExposeSecret;
    let config = load_config(path)?;
    let files = if files.is_empty() {
        payshim::audit::chain_files(&config.audit.path)
            .with_context(|| format!("listing {}", config.audit.path.display()))?
    } else {
        files.to_vec()
    };
    match payshim::audit::verify_files(&files, config.audit.key.expose_secret()) {
        Ok(report) => {
            println!(
                "OK: {} records in {} file(s), chain intact",
                report.records, report.files
            );
            if report.torn_tail {
                println!(
                    "note: the last file ends with an incomplete line (a crash mid-write); every complete line verifies"
                );
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            Ok(std::process::ExitCode::from(2))
        }
    }
}
