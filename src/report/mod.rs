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

/// The records of a CSV text as [`csv_field`] writes them (fields quoted
/// with doubled quotes may hold commas and line breaks; `\r\n` ends a
/// record as `\n` does), each with the line it starts on (from 1). An
/// unclosed quote, or text after a closing one, is an error naming the line.
pub fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut line, mut record_line) = (1, 1);
    let mut chars = text.chars().peekable();
    let mut quoted_field = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if field.is_empty() && !quoted_field => {
                quoted_field = true;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            line += usize::from(c == '\n');
                            field.push(c);
                        }
                        None => return Err(format!("line {record_line}: a quoted field is not closed")),
                    }
                }
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                quoted_field = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push((record_line, std::mem::take(&mut record)));
                quoted_field = false;
                line += 1;
                record_line = line;
            }
            _ if quoted_field => return Err(format!("line {line}: text after a quoted field's closing quote")),
            c => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() || quoted_field {
        record.push(field);
        records.push((record_line, record));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::{csv_field, csv_records};

    #[test]
    fn csv_records_read_what_csv_field_writes() {
        let fields = ["plain", "a,b", "say \"x\"", "two\r\nlines", ""];
        let text = format!("{}\r\nnext,row\n", fields.map(csv_field).join(","));
        let records = csv_records(&text).unwrap();
        assert_eq!(records[0], (1, fields.map(String::from).to_vec()));
        assert_eq!(records[1], (3, vec!["next".to_owned(), "row".to_owned()]));
        assert_eq!(records.len(), 2);
        assert_eq!(csv_records("a,\"b\nc").unwrap_err(), "line 1: a quoted field is not closed");
        assert_eq!(csv_records("x\n\"b\"c,d").unwrap_err(), "line 2: text after a quoted field's closing quote");
    }

    #[test]
    fn csv_fields_with_commas_quotes_or_line_breaks_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("q\",x"), "\"q\"\",x\"");
        assert_eq!(csv_field("two\r\nlines"), "\"two\r\nlines\"");
    }
}
