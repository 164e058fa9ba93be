//! Card data for the end-to-end payment tests, and the payshim binary as a child process.
//!
//! - `BRANDS` / `pan`: Luhn-valid card numbers of every brand payshim accepts, distinct for
//!   distinct `n`, so a test can tell every request's card apart.
//! - `find_pans` / `find_cvvs`: the search a leak test runs over logs, audit files and
//!   response bodies (see each function for its rule).
//! - `Binary`: `payshim --config FILE` as a child process with stdout and stderr in files,
//!   for the tests that need the real process (trace logging, SIGTERM, SIGKILL).

use std::collections::HashSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::payshim::set_key;
use super::serving::wait_bound;

/// The payshim binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_payshim");

/// A card brand as payshim detects it (src/payment/card.rs): IIN prefixes, the length the
/// tests use, and the CVV length it requires.
#[derive(Clone, Copy, Debug)]
pub struct BrandSpec {
    /// The name payshim writes in audit records and log lines.
    pub name: &'static str,
    pub prefixes: &'static [&'static str],
    pub len: usize,
    pub cvv_len: usize,
}

pub const VISA: BrandSpec = BrandSpec {
    name: "visa",
    prefixes: &["4"],
    len: 16,
    cvv_len: 3,
};
pub const MASTERCARD: BrandSpec = BrandSpec {
    name: "mastercard",
    prefixes: &["51", "52", "53", "54", "55", "2221", "2500", "2720"],
    len: 16,
    cvv_len: 3,
};
pub const AMEX: BrandSpec = BrandSpec {
    name: "amex",
    prefixes: &["34", "37"],
    len: 15,
    cvv_len: 4,
};
pub const DISCOVER: BrandSpec = BrandSpec {
    name: "discover",
    prefixes: &["6011", "644", "649", "65"],
    len: 16,
    cvv_len: 3,
};
pub const JCB: BrandSpec = BrandSpec {
    name: "jcb",
    prefixes: &["3528", "3589"],
    len: 16,
    cvv_len: 3,
};
pub const DINERS: BrandSpec = BrandSpec {
    name: "diners",
    prefixes: &["300", "305", "36", "38", "39"],
    len: 14,
    cvv_len: 3,
};
pub const UNIONPAY: BrandSpec = BrandSpec {
    name: "unionpay",
    prefixes: &["62"],
    len: 19,
    cvv_len: 3,
};

/// Every brand payshim accepts.
pub const BRANDS: [BrandSpec; 7] = [VISA, MASTERCARD, AMEX, DISCOVER, JCB, DINERS, UNIONPAY];

/// The Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `partial` followed by the Luhn check digit that makes it valid.
pub fn luhn_complete(partial: &str) -> String {
    (b'0'..=b'9')
        .map(|d| format!("{partial}{}", d as char))
        .find(|candidate| luhn_valid(candidate))
        .expect("one check digit always fits")
}

/// A Luhn-valid PAN of `brand` with `len` digits: a prefix of the brand (chosen by `n`), the
/// digits of `n` spread out by a bijection mod 10^width, then the check digit. Distinct `n`
/// (below 10^10) give distinct numbers.
pub fn pan_of_len(brand: BrandSpec, len: usize, n: u64) -> String {
    let prefix = brand.prefixes[(n as usize) % brand.prefixes.len()];
    let width = len - prefix.len() - 1;
    let modulus = 10u128.pow(width as u32);
    // 7_919 and 104_729 are prime and coprime with 10: a bijection on 0..10^width.
    let body = (u128::from(n) * 7_919 + 104_729) % modulus;
    luhn_complete(&format!("{prefix}{body:0width$}"))
}

/// `pan_of_len` at the brand's usual length.
pub fn pan(brand: BrandSpec, n: u64) -> String {
    pan_of_len(brand, brand.len, n)
}

/// The same digits with the last one changed: fails the Luhn check.
pub fn luhn_broken(pan: &str) -> String {
    let (head, last) = pan.split_at(pan.len() - 1);
    let d = last.as_bytes()[0] - b'0';
    format!("{head}{}", (d + 1) % 10)
}

/// Groups of four separated by `sep` (`4111 1111 1111 1111`).
pub fn grouped(pan: &str, sep: char) -> String {
    let mut out = String::new();
    for (i, c) in pan.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

/// Every occurrence of a number of `pans` in `hay`, as (number, byte offset).
///
/// Rule: a *digit run* is a maximal sequence of ASCII digits in which single spaces or
/// single dashes may stand between two digits (so `4111111111111111`, `4111 1111 1111 1111`,
/// `4111-1111-1111-1111` and any other grouping are all one run). Separators are removed and
/// every 12-19 digit window of the run is looked up in `pans`. This finds a number in plain,
/// spaced and dashed form, also when glued to other digits; it does not decode JSON `\u`
/// escapes (payshim's JSON logs never escape digits, spaces or dashes).
pub fn find_pans(hay: &[u8], pans: &HashSet<String>) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < hay.len() {
        if !hay[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = String::new();
        loop {
            digits.push(hay[i] as char);
            i += 1;
            if i < hay.len() && hay[i].is_ascii_digit() {
                continue;
            }
            if i + 1 < hay.len() && matches!(hay[i], b' ' | b'-') && hay[i + 1].is_ascii_digit() {
                i += 1;
                continue;
            }
            break;
        }
        if digits.len() >= 12 {
            for from in 0..digits.len() {
                for len in 12..=19 {
                    if let Some(window) = digits.get(from..from + len)
                        && pans.contains(window)
                    {
                        found.push((window.to_string(), start));
                    }
                }
            }
        }
    }
    found
}

/// Names under which a CVV could be written next to its value.
pub const CVV_KEYS: [&str; 5] = [
    "verification",
    "cvv",
    "cvc",
    "security_code",
    "securitycode",
];

/// How far after a CVV key its value is looked for.
pub const CVV_WINDOW: usize = 40;

/// Every occurrence of a value of `cvvs` *as the value of a CVV key* in `hay`, as (cvv,
/// offset).
///
/// Rule: for every case-insensitive occurrence of a key of `CVV_KEYS` (`verification` covers
/// `verification_value`, `cvv` covers `cvv2`), the rest of the identifier (`[A-Za-z0-9_]`)
/// is skipped, then any run of separators (quotes, backslashes, `:`, `=`, whitespace,
/// brackets); if a run of ASCII digits starts there, within `CVV_WINDOW` bytes of the key,
/// it is the key's value and is looked up in `cvvs`. This finds
/// `"verification_value":"123"`, `verification_value=123`, `\"cvv\": \"123\"`,
/// `cvv2=123`, `security_code: 123`, whatever the quoting or escaping, and does not take an
/// unrelated number that merely follows the key (`"source":"data.verification_value",
/// "request_id":"...-7745-..."`). A CVV alone, far from any key, is not looked for: three
/// digits occur everywhere (ports, statuses, latencies, UUIDs). Tests also draw CVVs that
/// cannot be a status code or a year (see `cvv_pool`).
pub fn find_cvvs(hay: &[u8], cvvs: &HashSet<String>) -> Vec<(String, usize)> {
    let lower = hay.to_ascii_lowercase();
    let is_separator = |b: u8| {
        matches!(
            b,
            b'"' | b'\'' | b'\\' | b':' | b'=' | b' ' | b'\t' | b'[' | b'(' | b'{' | b'<'
        )
    };
    let mut found = Vec::new();
    for key in CVV_KEYS {
        let key = key.as_bytes();
        let mut at = 0;
        while let Some(pos) = find_from(&lower, key, at) {
            at = pos + 1;
            let limit = (pos + key.len() + CVV_WINDOW).min(hay.len());
            let mut i = pos + key.len();
            while i < limit && (hay[i].is_ascii_alphanumeric() || hay[i] == b'_') {
                i += 1;
            }
            while i < limit && is_separator(hay[i]) {
                i += 1;
            }
            if i < limit && hay[i].is_ascii_digit() {
                let end = hay[i..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(hay.len(), |n| i + n);
                let run = String::from_utf8_lossy(&hay[i..end]).into_owned();
                if cvvs.contains(&run) {
                    found.push((run, i));
                }
            }
        }
    }
    found
}

fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Distinct CVVs of `len` digits (3 or 4), never an HTTP status (100-599) nor a plausible year
/// (1900-2199), so that a CVV found next to its key is a CVV and not a number that happens to
/// be near one.
pub fn cvv_pool(len: usize) -> impl Iterator<Item = String> {
    let range = if len == 3 { 600..1000 } else { 2200..10000 };
    // A stride coprime with the range size, so values are spread yet distinct.
    let size: u32 = range.len() as u32;
    let start = range.start;
    (0..size).map(move |i| format!("{}", start + (i * 7 + 3) % size))
}

/// A short excerpt of `hay` around `at`, for failure messages.
pub fn context(hay: &[u8], at: usize) -> String {
    let from = at.saturating_sub(80);
    let to = (at + 80).min(hay.len());
    String::from_utf8_lossy(&hay[from..to]).into_owned()
}

/// The current (year, month) in UTC.
pub fn utc_year_month() -> (u16, u8) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as u16, month as u8)
}

/// The month before (year, month).
pub fn previous_month((year, month): (u16, u8)) -> (u16, u8) {
    if month == 1 {
        (year - 1, 12)
    } else {
        (year, month - 1)
    }
}

/// `payshim --config FILE` as a child process, killed (by its pid) if the test ends early.
pub struct Binary {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Binary {
    /// Writes `config` (listeners on 127.0.0.1 port 0) to `dir/NAME.toml` and starts payshim
    /// on it, in `dir`, stdout and stderr to `dir/NAME.stdout` and `dir/NAME.stderr`, without
    /// the environment's `PAYSHIM__` variables. Returns once payshim has logged the addresses
    /// it bound (`public`, `admin`): `config` must log at info level (see `serving`).
    pub async fn start(dir: &Path, name: &str, config: &str) -> Binary {
        Binary::start_bin(Path::new(BIN), dir, name, config).await
    }

    /// `start` with another payshim executable (a benchmark may run a release build).
    pub async fn start_bin(bin: &Path, dir: &Path, name: &str, config: &str) -> Binary {
        let any_port = Some("\"127.0.0.1:0\"");
        let config = set_key(config, "server", "listen", any_port);
        let config = set_key(&config, "admin", "listen", any_port);
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).expect("write config");
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create stdout file"))
            .stderr(File::create(&stderr).expect("create stderr file"));
        for (key, _) in std::env::vars() {
            if key.starts_with("PAYSHIM__") {
                cmd.env_remove(key);
            }
        }
        // Built before the addresses are known, so that a failed start still kills it.
        let unbound = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let mut binary = Binary {
            child: cmd.spawn().expect("start payshim"),
            public: unbound,
            admin: unbound,
            config: config_path,
            stdout,
            stderr,
        };
        let (out, err) = (binary.stdout.clone(), binary.stderr.clone());
        let bound = wait_bound(&out, &mut binary.child, || output(&out, &err)).await;
        (binary.public, binary.admin) = (bound.public, bound.admin);
        binary
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.public.port())
    }

    /// stdout and stderr so far, for failure messages (the last 4000 bytes of each).
    pub fn output(&self) -> String {
        output(&self.stdout, &self.stderr)
    }

    /// `kill -SIGNAL <pid>` (`"TERM"`, `"KILL"`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Waits for the process to exit (at most `timeout`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "payshim still running after {timeout:?}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then a clean exit (status 0) within 15 s.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(15)).await;
        assert!(
            status.success(),
            "payshim exit status {status} after SIGTERM\n{}",
            self.output()
        );
    }
}

/// The last 4000 bytes of the files `stdout` and `stderr`, for failure messages.
fn output(stdout: &Path, stderr: &Path) -> String {
    let tail = |path: &Path| {
        let text = std::fs::read(path).unwrap_or_default();
        let from = text.len().saturating_sub(4000);
        String::from_utf8_lossy(&text[from..]).into_owned()
    };
    format!(
        "--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
        tail(stdout),
        tail(stderr)
    )
}

/// `payshim audit verify --config CONFIG [FILES...]`.
pub fn audit_verify(config: &Path, files: &[PathBuf]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("audit")
        .arg("verify")
        .arg("--config")
        .arg(config)
        .args(files)
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("PAYSHIM__") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run payshim audit verify")
}

/// Sanity checks of the helpers themselves (run by every test that relies on them).
pub fn self_check() {
    for brand in BRANDS {
        for n in 0..20 {
            let p = pan(brand, n);
            assert_eq!(p.len(), brand.len, "{p}");
            assert!(luhn_valid(&p), "{p}");
            assert!(!luhn_valid(&luhn_broken(&p)), "{p}");
        }
    }
    let set: HashSet<String> = ["4111111111111111".to_string()].into();
    for form in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
    ] {
        let text = format!("x=\"{form}\" y");
        assert_eq!(find_pans(text.as_bytes(), &set).len(), 1, "{form}");
    }
    assert!(find_pans(b"41111111 111 1111 11", &set).len() == 1);
    assert!(find_pans(b"4111  1111 1111 1111", &set).is_empty());
    let cvvs: HashSet<String> = ["737".to_string()].into();
    for text in [
        r#"{"verification_value":"737"}"#,
        "verification_value=737",
        r#"\"CVV\": \"737\""#,
        "cvv2=737&x=1",
        "Security_Code: 737",
    ] {
        assert_eq!(find_cvvs(text.as_bytes(), &cvvs).len(), 1, "{text}");
    }
    for text in [
        "status=737",
        r#"{"verification_value":"7370"}"#,
        "verification_value=*** 737",
        r#""source":"data.verification_value","request_id":"01a20fdd-7e63-737d""#,
    ] {
        assert!(find_cvvs(text.as_bytes(), &cvvs).is_empty(), "{text}");
    }
}
