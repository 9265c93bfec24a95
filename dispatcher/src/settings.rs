//! Configuration layers shared by both binaries: built-in defaults, a TOML file, the
//! environment, then command-line `key=value` settings (later wins; SPEC §2). Every setting has
//! one key — `heartbeat` in TOML, `PUSHGATE_HEARTBEAT` in the environment, `--set heartbeat=…` on
//! the command line — and each binary deserializes the merged table into its own typed config.
//!
//! The environment is read through [`Env`] so tests hand in a map instead of calling `set_var`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;

/// Reads environment variables; tests pass a map.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment (empty values count as unset).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// How a setting's text from the environment or the command line is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Kept as a string.
    Text,
    /// Read as a TOML value (`100`, `true`), else kept as a string (`25s`).
    Value,
    /// A comma-separated list.
    List,
}

/// Why the layers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("setting {key}: {message}")]
    Setting { key: String, message: String },
    #[error("unknown setting {0:?}")]
    UnknownSetting(String),
}

/// The environment variable of a setting: `PUSHGATE_` + the key in upper case.
pub fn env_name(key: &str) -> String {
    format!("PUSHGATE_{}", key.to_ascii_uppercase())
}

/// Merges the layers and deserializes them into `T` (whose `Default` gives the built-in
/// defaults, through `#[serde(default)]`). `settings` lists every key and how its text is read.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: &dyn Env,
    overrides: &[(String, String)],
    settings: &[(&str, Kind)],
) -> Result<T, SettingsError> {
    let mut table = match file {
        None => toml::Table::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| SettingsError::Read { path: path.to_owned(), source })?;
            text.parse::<toml::Table>()
                .map_err(|e| SettingsError::File { path: path.to_owned(), message: e.to_string() })?
        }
    };
    for (key, kind) in settings {
        if let Some(text) = env.get(&env_name(key)) {
            table.insert((*key).to_owned(), value(*kind, &text));
        }
    }
    for (key, text) in overrides {
        let kind = settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| SettingsError::UnknownSetting(key.clone()))?;
        table.insert(key.clone(), value(kind, text));
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| SettingsError::Setting { key: "config".into(), message: e.message().to_owned() })
}

/// Splits command-line `KEY=VALUE` settings.
pub fn parse_overrides(pairs: &[String]) -> Result<Vec<(String, String)>, SettingsError> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .ok_or_else(|| SettingsError::Setting { key: pair.clone(), message: "expected KEY=VALUE".into() })
        })
        .collect()
}

fn value(kind: Kind, text: &str) -> toml::Value {
    match kind {
        Kind::Text => toml::Value::String(text.to_owned()),
        Kind::List => toml::Value::Array(
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
        Kind::Value => format!("v = {text}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(text.to_owned())),
    }
}
