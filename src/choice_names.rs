//! The names users type for the crate's choices (`--arch resnet18`,
//! `--mode full`, …) come from one place: each enum's `clap::ValueEnum`
//! derive, which serde's `kebab-case` renaming matches. No hand-written name
//! tables.

use anyhow::{anyhow, Result};
use clap::ValueEnum;

/// The command-line name of a choice, and the choice of a name.
pub trait Named: ValueEnum {
    fn name(&self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
    }

    fn parse_name(name: &str) -> Result<Self> {
        Self::from_str(name, false).map_err(|_| {
            let known: Vec<String> = Self::value_variants().iter().map(Named::name).collect();
            anyhow!("unknown value {name:?} (expected one of: {})", known.join(", "))
        })
    }
}

impl<T: ValueEnum> Named for T {}
