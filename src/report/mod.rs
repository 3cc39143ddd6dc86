//! What a person sees: PNG figures, TensorBoard event files and CSV tables,
//! and (re-exported from [`crate::reporter`], which sits on the floor) the
//! reporter the library speaks through.

pub mod plots;
pub mod tensorboard;

pub use crate::reporter::{Capture, Reporter, Silent, Terminal};

/// One CSV field: quoted (quotes doubled) when it holds a comma, a quote or a
/// line break, as spreadsheets and Python's `csv` read it.
pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_with_commas_quotes_or_line_breaks_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("q\",x"), "\"q\"\",x\"");
        assert_eq!(csv_field("two\r\nlines"), "\"two\r\nlines\"");
    }
}
