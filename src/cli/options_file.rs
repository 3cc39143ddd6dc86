//! A tool's options from TOML instead of flags: a `--config FILE` (a run's
//! `run.toml`, which [`crate::run_dir::options_toml`] writes), a sweep
//! file's points. Every key becomes the flag of the same
//! name and goes through the tool's own clap parser, so a file is checked
//! exactly as a command line is (an unknown key or a bad value is one line
//! naming the file and the key). Parsing only: nothing here runs.

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Keys a file cannot set: how this process carries the run out, given on
/// its command line.
const COMMAND_LINE_ONLY: &[&str] = &["overwrite", "resume", "threads", "config"];

/// The options `A` of tool `name` from `table`, with `A`'s defaults for
/// the keys it leaves out; errors name `source`.
pub fn from_table<A: clap::Args + clap::FromArgMatches>(
    name: &'static str,
    table: &toml::Table,
    source: &str,
) -> Result<A> {
    let flags: Vec<String> = table.iter().flat_map(|(key, value)| flag(key, value)).collect();
    let command = A::augment_args(clap::Command::new(name).no_binary_name(true));
    let matches = command.try_get_matches_from(&flags).map_err(|e| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
        anyhow::anyhow!("{source}: {first}")
    })?;
    A::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{source}: {e}"))
}

/// `args` as the command line gave them, with the options it did not give
/// (`given`: their ids) taken from the TOML file `file`. The options `A`
/// does not serialize (how the process runs: `--threads`, …) are left at
/// their defaults for the caller to restore.
pub fn merged<A>(args: &A, file: &Path, given: &BTreeSet<String>, name: &'static str) -> Result<A>
where
    A: clap::Args + clap::FromArgMatches + Serialize + DeserializeOwned,
{
    let source = format!("--config {}", file.display());
    let text = std::fs::read_to_string(file).with_context(|| format!("{source}: cannot read"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{source}: {}", one_line(&e)))?;
    if let Some(key) = table.keys().find(|key| COMMAND_LINE_ONLY.contains(&key.replace('-', "_").as_str())) {
        bail!("{source}: key {key:?} cannot be set in a file (give --{} on the command line)", key.replace('_', "-"));
    }
    let from_file: A = from_table(name, &table, &source)?;
    let (Value::Object(mut options), Value::Object(flags)) =
        (serde_json::to_value(from_file)?, serde_json::to_value(args)?)
    else {
        bail!("{name}: options that are not a table");
    };
    for id in given {
        if let Some(value) = flags.get(id) {
            options.insert(id.clone(), value.clone());
        }
    }
    serde_json::from_value(Value::Object(options)).with_context(|| format!("{source}: the merged options"))
}

/// A TOML option as the tool's flags: `--lr 0.01`, `--amp` for true,
/// nothing for false (every flag is off by default), a list as one
/// comma-separated value (`--hidden 10,100`).
pub fn flag(key: &str, value: &toml::Value) -> Vec<String> {
    let name = format!("--{}", key.replace('_', "-"));
    match value {
        toml::Value::Boolean(true) => vec![name],
        toml::Value::Boolean(false) => vec![],
        toml::Value::Array(values) => vec![name, values.iter().map(plain).collect::<Vec<_>>().join(",")],
        other => vec![name, plain(other)],
    }
}

/// A value as a command line or a folder name shows it (strings unquoted).
pub fn plain(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An error's text on one line (TOML parse errors span several).
pub fn one_line(error: &impl std::fmt::Display) -> String {
    error.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An option's value out of its range (`--epochs 0`): a usage error, which
/// ends the binary with exit status 2 as clap's value checks do.
#[derive(Debug)]
pub struct BadValue(pub String);

impl BadValue {
    /// `error` as a usage error, its message kept.
    pub fn wrap(error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Self(format!("{error:#}")))
    }
}

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadValue {}
