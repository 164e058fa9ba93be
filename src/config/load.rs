//! Reading the configuration: the TOML file (or string) plus the `PAYSHIM__SECTION__KEY`
//! environment overrides, deserialized into the raw form and then validated.

use std::collections::HashMap;
use std::path::Path;

use super::raw::RawConfig;
use super::{Config, ConfigError, Result};

/// Loads the file (if given) and the environment overrides, then validates.
///
/// `env` is passed in as a value so tests never touch the process environment.
pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config> {
    let mut builder = ::config::Config::builder();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::new(
                "--config",
                format!("file {} does not exist", path.display()),
            ));
        }
        builder = builder.add_source(::config::File::from(path).format(::config::FileFormat::Toml));
    }
    with_env(builder, env)
}

/// Loads from a TOML string (tests and the embedded default).
pub fn from_toml(toml: &str, env: &HashMap<String, String>) -> Result<Config> {
    let builder = ::config::Config::builder()
        .add_source(::config::File::from_str(toml, ::config::FileFormat::Toml));
    with_env(builder, env)
}

/// Adds the `PAYSHIM__SECTION__KEY` overrides from `env`, deserializes, validates.
fn with_env(
    builder: ::config::ConfigBuilder<::config::builder::DefaultState>,
    env: &HashMap<String, String>,
) -> Result<Config> {
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("PAYSHIM__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let raw: RawConfig = builder
        .add_source(
            ::config::Environment::with_prefix("PAYSHIM")
                .prefix_separator("__")
                .separator("__")
                .source(Some(overrides)),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::new(config_error_key(&e), e.to_string()))?;
    Config::try_from(raw)
}

fn config_error_key(e: &::config::ConfigError) -> String {
    // serde reports an unknown key as "unknown field `listn`, expected ..." on its table.
    let text = e.to_string();
    let unknown = text
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_string());
    let table = match e {
        ::config::ConfigError::Type { key: Some(k), .. }
        | ::config::ConfigError::At { key: Some(k), .. } => Some(k.clone()),
        _ => None,
    };
    if let Some(field) = unknown {
        return match table {
            Some(t) if !t.is_empty() => format!("{t}.{field}"),
            _ => field,
        };
    }
    match e {
        ::config::ConfigError::Type { key: Some(k), .. } => k.clone(),
        ::config::ConfigError::NotFound(k) => k.clone(),
        ::config::ConfigError::At { key: Some(k), .. } => k.clone(),
        _ => "(file)".to_string(),
    }
}
