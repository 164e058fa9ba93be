//! Node.js for the SDK and browser tests: the pinned npm packages of tests/sdk (both
//! official SDKs and playwright-core, locked by tests/sdk/package-lock.json), installed
//! with `npm ci` when missing, and a clear failure when node or npm are not installed
//! (these tests are never skipped).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

/// The official SDKs the end-to-end tests run, by npm name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sdk {
    /// `@moltin/sdk`, the name the SDK had until 2024.
    Moltin,
    /// `@elasticpath/js-sdk`, the same code under its current name.
    ElasticPath,
}

impl Sdk {
    pub const ALL: [Sdk; 2] = [Sdk::Moltin, Sdk::ElasticPath];

    pub fn package(self) -> &'static str {
        match self {
            Sdk::Moltin => "@moltin/sdk",
            Sdk::ElasticPath => "@elasticpath/js-sdk",
        }
    }

    /// The pinned version (tests/sdk/package.json), also what the SDK sends as
    /// `X-MOLTIN-SDK-VERSION`.
    pub fn version(self) -> &'static str {
        match self {
            Sdk::Moltin => "36.0.0",
            Sdk::ElasticPath => "35.0.0",
        }
    }

    /// The package's browser build (its `browser` field: a UMD bundle with no imports).
    pub fn browser_bundle(self) -> PathBuf {
        let file = match self {
            Sdk::Moltin => "moltin.js",
            Sdk::ElasticPath => "index.js",
        };
        package_dir(self.package()).join("dist").join(file)
    }
}

/// The pinned playwright-core, which drives Debian's chromium over CDP (no browser download).
pub const PLAYWRIGHT_VERSION: &str = "1.65.2";

/// tests/sdk, where package.json and its lockfile live.
pub fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sdk")
}

fn package_dir(package: &str) -> PathBuf {
    let mut dir = sdk_dir().join("node_modules");
    for part in package.split('/') {
        dir.push(part);
    }
    dir
}

/// `program --version`, or a clear failure when it is not installed.
pub async fn require_tool(program: &str) -> String {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "`{program}` is required for the SDK and browser tests and could not be run \
                 ({e}); install Node.js 18+ with npm (scripts/test.sh does)"
            )
        });
    assert!(
        out.status.success(),
        "`{program} --version` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Checks node and npm, then installs the locked packages (`npm ci`) unless every pinned
/// one is there in its version. Serialized: tests run in parallel and must not run two
/// installs in the same folder.
pub async fn ensure_packages() {
    require_tool("node").await;
    require_tool("npm").await;
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let pinned = [
        (Sdk::Moltin.package(), Sdk::Moltin.version()),
        (Sdk::ElasticPath.package(), Sdk::ElasticPath.version()),
        ("playwright-core", PLAYWRIGHT_VERSION),
    ];
    if pinned
        .iter()
        .any(|(p, v)| installed_version(p).as_deref() != Some(v))
    {
        // Blocking on purpose (under the lock); nothing else runs on this test's runtime yet.
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(sdk_dir())
            .stdin(Stdio::null())
            .output()
            .expect("run npm ci");
        assert!(
            out.status.success(),
            "`npm ci` in {} failed:\n{}\n{}",
            sdk_dir().display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (package, version) in pinned {
        assert_eq!(
            installed_version(package).as_deref(),
            Some(version),
            "installed {package} is not the pinned version; run `npm ci` in tests/sdk"
        );
    }
}

fn installed_version(package: &str) -> Option<String> {
    let text = std::fs::read_to_string(package_dir(package).join("package.json")).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    json["version"].as_str().map(str::to_owned)
}
