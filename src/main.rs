//! The `payshim` command line: run, check-config, hash-key, audit verify, audit pending.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};

use payshim::audit::{AuditToml, PendingReport, VerifyError, VerifyReport};
use payshim::config::{self, Config, ConfigSource};
use secrecy::{ExposeSecret, SecretSlice};

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
    /// Verify the HMAC chain across FILES (oldest first); exit 2 naming the first bad line.
    Verify {
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// List forwarded payments and transaction actions without their completed record
    /// (to check against the API after a crash); verifies the chain too. Exit 0: none,
    /// 3: some, 2: the chain does not verify (the list is still printed).
    Pending {
        #[command(flatten)]
        chain: ChainArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// The chain to read and its key. Of the config, only the `[audit]` table is read.
#[derive(Args)]
struct ChainArgs {
    /// File holding an audit key (a trailing newline is ignored); repeat it for a chain
    /// whose key was rotated, one file per key. Default: PAYSHIM__AUDIT__KEY, then
    /// audit.key of the config, with PAYSHIM__AUDIT__PREVIOUS_KEYS or
    /// audit.previous_keys.
    #[arg(long, value_name = "PATH")]
    key_file: Vec<PathBuf>,
    /// Audit files, oldest first. None: the configured log and its rotations.
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    payshim::redact::install_panic_hook();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.config.as_deref()),
        Some(Command::CheckConfig) => check_config(cli.config.as_deref()),
        Some(Command::HashKey) => hash_key(),
        Some(Command::Audit {
            command: AuditCommand::Verify { chain },
        }) => audit_verify(cli.config.as_deref(), &chain),
        Some(Command::Audit {
            command: AuditCommand::Pending { chain, format },
        }) => audit_pending(cli.config.as_deref(), &chain, format),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("payshim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(load_with_source(path)?.0)
}

/// The config and, when it came from a file, where a reload reads it again.
fn load_with_source(path: Option<&Path>) -> anyhow::Result<(Config, Option<ConfigSource>)> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None if Path::new(DEFAULT_CONFIG).exists() => Some(PathBuf::from(DEFAULT_CONFIG)),
        None => None,
    };
    Ok(match file {
        Some(file) => {
            let source = ConfigSource::new(file, env);
            (source.load()?, Some(source))
        }
        None => (config::from_toml(EMBEDDED_CONFIG, &env)?, None),
    })
}

fn run(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    disable_core_dumps();
    huge_pages_off_unless_allowed();
    let (config, source) = load_with_source(path)?;
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
        let _file_size_signal = survive_file_size_limit()?;
        let listeners = payshim::Listeners::bind(&config).await.with_context(|| {
            format!("binding {} / {}", config.server.listen, config.admin.listen)
        })?;
        let reloads = payshim::reload::Reloads {
            source,
            signals: reload_signal().context("installing the SIGHUP handler")?,
        };
        payshim::run_with(config, Some(reloads), listeners, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
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

/// SIGHUP asks for a reload (README.md, "Operations"); handled for the life of the
/// process, so a SIGHUP never kills payshim, even on the embedded default config.
fn reload_signal() -> std::io::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading");
            // A reload already queued covers this one too.
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

/// Linux's SIGXFSZ: a write past the process's file-size limit (`RLIMIT_FSIZE`).
const SIGXFSZ: i32 = 25;

/// Takes SIGXFSZ away from its default action, which kills the process: with a handler
/// installed, a write past the file-size limit fails with EFBIG instead, and the audit
/// writer handles that as it handles a full disk (payments get 503, `/readyz` fails, it
/// retries). A payment proxy must not die mid-payment because a file grew too big. The
/// handler stays installed for the life of the process; the stream is kept only so that
/// nothing else reads it.
fn survive_file_size_limit() -> anyhow::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::from_raw(SIGXFSZ)).context("installing the SIGXFSZ handler")
}

/// Memory holds card data: a core dump must never write it to disk.
fn disable_core_dumps() {
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0) {
        eprintln!("payshim: warning: could not disable core dumps: {e}");
    }
}

/// mimalloc's own switch for transparent huge pages; payshim only changes its default.
const ALLOW_THP: &str = "MIMALLOC_ALLOW_THP";

/// Transparent huge pages off for this process unless the operator set [`ALLOW_THP`]:
/// with them, the kernel's khugepaged fills partly used 2 MiB regions into whole huge
/// pages, so a thousand idle connections cost 32 KiB each instead of 23, and payments'
/// p99 doubles (README.md, "Memory per idle connection"), for about 1 % of passthrough
/// throughput. Predictable memory under a container's limit matters more to a payment
/// proxy than that.
fn huge_pages_off_unless_allowed() {
    if std::env::var_os(ALLOW_THP).is_some() {
        return;
    }
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("payshim: warning: could not turn transparent huge pages off: {e}");
    }
}

fn check_config(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    print!("{config}");
    for warning in config.audit.warnings() {
        eprintln!("warning: {warning}");
    }
    eprintln!("config OK");
    Ok(ExitCode::SUCCESS)
}

fn hash_key() -> anyhow::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}

/// The files of the chain (FILES, else the configured log and its rotations) and its keys,
/// from the `--key-file`s, else `PAYSHIM__AUDIT__KEY` or the config's `[audit]` table with
/// the previous keys: an auditor needs nothing else of the shop's config.
fn audit_chain(
    config: Option<&Path>,
    chain: &ChainArgs,
) -> anyhow::Result<(Vec<PathBuf>, Vec<SecretSlice<u8>>)> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let toml = match config {
        Some(p) => AuditToml::File(p),
        None if Path::new(DEFAULT_CONFIG).exists() => AuditToml::File(Path::new(DEFAULT_CONFIG)),
        None => AuditToml::Text(EMBEDDED_CONFIG),
    };
    let audit = payshim::audit::load_offline(toml, &chain.key_file, &env)?;
    let files = if chain.files.is_empty() {
        payshim::audit::chain_files(&audit.path)
            .with_context(|| format!("listing {}", audit.path.display()))?
    } else {
        chain.files.clone()
    };
    Ok((files, audit.keys))
}

/// Verifies `files` with every key given.
fn verify(files: &[PathBuf], keys: &[SecretSlice<u8>]) -> Result<VerifyReport, VerifyError> {
    let keys: Vec<&[u8]> = keys.iter().map(|k| k.expose_secret()).collect();
    payshim::audit::verify_chain(files, &keys)
}

fn audit_verify(config: Option<&Path>, chain: &ChainArgs) -> anyhow::Result<ExitCode> {
    let (files, keys) = audit_chain(config, chain)?;
    match verify(&files, &keys) {
        Ok(report) => {
            println!(
                "OK: {} records in {} file(s), chain intact ({} system events, {} key rotations)",
                report.records, report.files, report.system_events, report.key_rotations
            );
            if report.torn_tail {
                println!("{TORN_TAIL_NOTE}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

const TORN_TAIL_NOTE: &str = "note: the last file ends with an incomplete line (a crash mid-write); every complete line verifies";

/// Verifies the chain, then lists what is pending from the same files. A chain that
/// does not verify still gets its list (the shop needs it most then), flagged and with
/// exit 2: a removed or forged `completed` record cannot be ruled out.
fn audit_pending(
    config: Option<&Path>,
    chain: &ChainArgs,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let (files, keys) = audit_chain(config, chain)?;
    let verified = verify(&files, &keys);
    if let Err(e) = &verified {
        eprintln!("FAILED: {e}");
        eprintln!("the chain does not verify: the list below cannot be trusted");
    }
    let report = match payshim::audit::pending_in(&files) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("FAILED: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match format {
        Format::Table => print_pending_table(&report, files.len(), verified.as_ref().ok()),
        Format::Json => print_pending_json(&report, files.len(), verified.as_ref().err()),
    }
    Ok(match (verified, report.pending.is_empty()) {
        (Err(_), _) => ExitCode::from(2),
        (Ok(_), true) => ExitCode::SUCCESS,
        (Ok(_), false) => ExitCode::from(3),
    })
}

fn print_pending_table(report: &PendingReport, files: usize, verified: Option<&VerifyReport>) {
    let checked = if verified.is_some() {
        ", chain intact"
    } else {
        ""
    };
    if report.pending.is_empty() {
        let lead = if verified.is_some() { "OK: no" } else { "No" };
        println!(
            "{lead} forwarded record without its completed record ({} records in {files} file(s){checked})",
            report.records
        );
    } else {
        print!("{}", payshim::audit::pending_table(&report.pending));
        println!(
            "{} forwarded without a completed record ({} records in {files} file(s){checked}): check them against the API",
            report.pending.len(),
            report.records
        );
    }
    if verified.is_some_and(|v| v.torn_tail) {
        println!("{TORN_TAIL_NOTE}");
    }
}

fn print_pending_json(report: &PendingReport, files: usize, error: Option<&VerifyError>) {
    let out = serde_json::json!({
        "verified": error.is_none(),
        "verify_error": error.map(ToString::to_string),
        "records": report.records,
        "files": files,
        "pending": report.pending,
    });
    println!("{out:#}");
}
