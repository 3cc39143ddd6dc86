//! Placeholder until the event-file writer lands (branch `report`).
use anyhow::Result;
use std::path::Path;

pub struct EventWriter;

impl EventWriter {
    pub fn create(_run_dir: &Path) -> Result<Self> {
        Ok(Self)
    }
    pub fn scalar(&mut self, _tag: &str, _value: f64, _step: i64) -> Result<()> {
        Ok(())
    }
    pub fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
