//! What a person sees: progress bars on the terminal, PNG figures,
//! TensorBoard event files and CSV tables.

pub mod plots;
pub mod progress;
pub mod tensorboard;

/// One CSV field: quoted (quotes doubled) when it holds a comma, a quote or a
/// line break, as spreadsheets and Python's `csv` read it.
pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}
