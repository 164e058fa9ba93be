//! The binary's commands: `check-config` prints a good config with its secrets masked and
//! names the bad key of a bad one (exit 1); `hash-key` prints the SHA-256 of stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use super::Fixture;
use crate::support;
use support::payshim::{AUDIT_KEY, SESSION_KEY, UPSTREAM_TOKEN, set_key, sha256_hex, toml_str};

const BIN: &str = env!("CARGO_BIN_EXE_payshim");

fn write_config(dir: &std::path::Path, name: &str, toml: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

fn payshim_cmd(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("PAYSHIM__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn check_config_prints_a_good_config_without_secrets() {
    let fixture = Fixture::new();
    let toml = format!(
        "{}\n[auth]\nsession_key = {}\n",
        fixture.base(),
        toml_str(SESSION_KEY)
    );
    let path = write_config(fixture.dir.path(), "good.toml", &toml);
    let out = payshim_cmd(fixture.dir.path())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run payshim check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // The effective config is printed...
    assert!(stdout.contains("[server]"), "{stdout}");
    assert!(stdout.contains("https://api.moltin.com"), "{stdout}");
    assert!(stdout.contains("web-eu"), "{stdout}");
    // Choices are printed as the config spells them.
    for line in [
        "format = \"json\"",
        "on_store_error = \"deny\"",
        "flush_interval = \"100ms\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{stdout}"
        );
    }
    // ...with every secret masked.
    for secret in [UPSTREAM_TOKEN, AUDIT_KEY, SESSION_KEY] {
        assert!(!stdout.contains(secret), "secret in stdout:\n{stdout}");
        assert!(!stderr.contains(secret), "secret in stderr:\n{stderr}");
    }
}

#[test]
fn check_config_names_the_bad_key_and_exits_1() {
    let fixture = Fixture::new();
    let toml = set_key(&fixture.base(), "upstream", "timeout", Some("\"soon\""));
    let path = write_config(fixture.dir.path(), "bad.toml", &toml);
    let out = payshim_cmd(fixture.dir.path())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run payshim check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("upstream.timeout"), "stderr:\n{stderr}");
    for secret in [UPSTREAM_TOKEN, AUDIT_KEY] {
        assert!(!stderr.contains(secret), "secret in stderr:\n{stderr}");
    }

    // Same through an environment override of a good file.
    let good = write_config(fixture.dir.path(), "good.toml", &fixture.base());
    let out = payshim_cmd(fixture.dir.path())
        .args(["check-config", "--config"])
        .arg(&good)
        .env("PAYSHIM__LIMITS__MAX_BODY", "12XB")
        .output()
        .expect("run payshim check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("limits.max_body"), "stderr:\n{stderr}");

    // A config file that does not exist.
    let out = payshim_cmd(fixture.dir.path())
        .args(["check-config", "--config"])
        .arg(fixture.dir.path().join("missing.toml"))
        .output()
        .expect("run payshim check-config");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn hash_key_prints_the_sha256_of_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = payshim_cmd(dir.path())
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run payshim hash-key");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"dev-storefront-key-0001\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "6ecc7fe3e3f8594b9f5c18bb945c7da4f4df401869da81f8cc2e9ae98f837162"
    );
    // The printed hash is what the config and `base_config` use.
    assert_eq!(
        sha256_hex("dev-storefront-key-0001"),
        "6ecc7fe3e3f8594b9f5c18bb945c7da4f4df401869da81f8cc2e9ae98f837162"
    );
}
