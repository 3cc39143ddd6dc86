//! Labels from a file (`--labels FILE.csv|.tsv`, the delimiter from the
//! extension): a header row naming the columns `path` and `label`, and
//! optionally `split`, in any order; then one image per row, fields quoted
//! as CSV allows (`"a, b"`, `""` for a quote) and trimmed of surrounding
//! spaces. A relative path is taken from the root the caller gives (the
//! labels file's folder, or `--data`); `split` is `train` or `val` (train
//! when empty or absent); with a label delimiter the label column holds a
//! set of labels (multi-label data).
//!
//! It reads the file and checks each row without reading any image: the
//! path must name a regular file with an image extension (never a folder,
//! a device or a pipe), the label must not be empty, the split must be
//! known, the row must have the header's fields, and an image may appear
//! once. A bad row is kept with its line and reason ([`BadRows`]) for the
//! caller to report, or is an error under `strict`. [`LabelsFile::folder`]
//! turns rows into the [`ImageFolder`] the folder layout would give for the
//! same images, so everything downstream is unchanged.

use super::image_folder::{has_image_extension, ImageFolder, Sample, IMAGE_EXTENSIONS};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Labels files larger than this are refused (a guard, not a limit anyone
/// should meet: a million rows take about 100 MB).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Bad rows printed one line each before the rest are only counted.
pub const BAD_ROWS_SHOWN: usize = 20;

/// Which split a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// One good row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line of the file where the row starts.
    pub line: usize,
    pub path: PathBuf,
    /// The row's labels: one, or (with a label delimiter) a set, sorted.
    pub labels: Vec<String>,
    pub split: Split,
}

/// Why a row was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    FieldCount,
    Quoting,
    EmptyPath,
    MissingFile,
    NotAnImageFile,
    EmptyLabel,
    UnknownSplit,
    Duplicate,
}

impl Fault {
    fn words(self) -> &'static str {
        match self {
            Fault::FieldCount => "wrong field count",
            Fault::Quoting => "bad quoting",
            Fault::EmptyPath => "empty path",
            Fault::MissingFile => "missing file",
            Fault::NotAnImageFile => "not an image file",
            Fault::EmptyLabel => "empty label",
            Fault::UnknownSplit => "unknown split",
            Fault::Duplicate => "duplicate image",
        }
    }
}

/// A row left out, with its line and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub line: usize,
    pub fault: Fault,
    pub reason: String,
}

/// The rows of a labels file left out, and how many rows it has.
#[derive(Debug, Clone, Default)]
pub struct BadRows {
    pub file: PathBuf,
    pub rows: usize,
    pub bad: Vec<BadRow>,
}

impl BadRows {
    /// One line per bad row (`FILE line N: reason`).
    pub fn lines(&self) -> Vec<String> {
        self.bad.iter().map(|row| format!("{} line {}: {}", self.file.display(), row.line, row.reason)).collect()
    }

    /// What a user is told: the first [`BAD_ROWS_SHOWN`] rows one line
    /// each, how many more, and one line counting them by fault (nothing
    /// when every row is good).
    pub fn report(&self) -> Vec<String> {
        if self.bad.is_empty() {
            return Vec::new();
        }
        let mut said: Vec<String> =
            self.lines().into_iter().take(BAD_ROWS_SHOWN).map(|line| format!("skipped {line}")).collect();
        if self.bad.len() > BAD_ROWS_SHOWN {
            said.push(format!("… and {} more bad row(s)", self.bad.len() - BAD_ROWS_SHOWN));
        }
        let mut counts: Vec<(Fault, usize)> = Vec::new();
        for row in &self.bad {
            match counts.iter_mut().find(|(fault, _)| *fault == row.fault) {
                Some((_, n)) => *n += 1,
                None => counts.push((row.fault, 1)),
            }
        }
        counts.sort();
        let by_fault: Vec<String> = counts.iter().map(|(fault, n)| format!("{n} {}", fault.words())).collect();
        said.push(format!(
            "{}: {} of {} row(s) skipped ({})",
            self.file.display(),
            self.bad.len(),
            self.rows,
            by_fault.join(", ")
        ));
        said
    }
}

/// A labels file read and checked.
#[derive(Debug, Clone)]
pub struct LabelsFile {
    pub path: PathBuf,
    pub rows: Vec<Row>,
    pub bad_rows: BadRows,
    /// Whether the header names a `split` column.
    pub has_split_column: bool,
}

/// How to read a labels file.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    /// Where relative image paths start.
    pub root: &'a Path,
    /// The separator of a multi-label row's labels; none: one label per row.
    pub label_delim: Option<char>,
    /// Make the first bad row an error naming the file and line.
    pub strict: bool,
}

impl LabelsFile {
    pub fn read(path: &Path, reading: Reading) -> Result<Self> {
        let text = read_text(path)?;
        let field_delim = field_delimiter(path)?;
        let mut records = Records::new(&text, field_delim);
        let header = loop {
            match records.next() {
                None => bail!("{}: empty (expected a header row: path,label[,split])", path.display()),
                Some(record) if record.is_blank() => continue,
                Some(record) => break record,
            }
        };
        let columns = Columns::of(&header, path)?;
        let mut file = LabelsFile {
            path: path.to_owned(),
            rows: Vec::new(),
            bad_rows: BadRows { file: path.to_owned(), ..BadRows::default() },
            has_split_column: columns.split.is_some(),
        };
        let mut first_line_of: HashMap<PathBuf, usize> = HashMap::new();
        for record in records.filter(|record| !record.is_blank()) {
            file.bad_rows.rows += 1;
            let checked = columns.row(&record, reading).and_then(|row| match first_line_of.get(&row.path) {
                Some(first) => Err((Fault::Duplicate, format!("{} is already on line {first}", row.path.display()))),
                None => Ok(row),
            });
            match checked {
                Ok(row) => {
                    first_line_of.insert(row.path.clone(), row.line);
                    file.rows.push(row);
                }
                Err((fault, reason)) if reading.strict => {
                    bail!("{} line {}: {} ({}; --strict)", path.display(), record.line, reason, fault.words())
                }
                Err((fault, reason)) => file.bad_rows.bad.push(BadRow { line: record.line, fault, reason }),
            }
        }
        if file.rows.is_empty() {
            bail!(
                "{}: no usable rows ({} row(s), {} bad; the first: {})",
                path.display(),
                file.bad_rows.rows,
                file.bad_rows.bad.len(),
                file.bad_rows.lines().first().map_or("none", String::as_str)
            );
        }
        Ok(file)
    }

    /// Every label of the good rows, sorted as `ImageFolder` sorts class
    /// folders.
    pub fn classes(&self) -> Vec<String> {
        let labels: BTreeSet<&String> = self.rows.iter().flat_map(|row| &row.labels).collect();
        labels.into_iter().cloned().collect()
    }

    /// The rows of `split`.
    pub fn rows_of(&self, split: Split) -> Vec<&Row> {
        self.rows.iter().filter(|row| row.split == split).collect()
    }

    /// `rows` as an image folder of `classes` (each row's labels among
    /// them), its samples in `ImageFolder`'s order: by class, then path
    /// (a multi-label sample by its first class). A label outside
    /// `classes` is an error naming its line.
    pub fn folder(&self, rows: &[&Row], classes: &[String], multi_label: bool) -> Result<ImageFolder> {
        let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let mut samples = Vec::with_capacity(rows.len());
        for row in rows {
            let mut label_set = Vec::with_capacity(row.labels.len());
            for label in &row.labels {
                let Some(&class) = index.get(label.as_str()) else {
                    bail!(
                        "{} line {}: label {label:?} is not one of the classes {classes:?}",
                        self.path.display(),
                        row.line
                    )
                };
                label_set.push(class);
            }
            label_set.sort_unstable();
            let class_index = label_set[0];
            samples.push(Sample { path: row.path.clone(), class_index, label_set: multi_label.then_some(label_set) });
        }
        samples.sort_by(|a, b| (a.class_index, &a.path).cmp(&(b.class_index, &b.path)));
        Ok(ImageFolder { root: self.path.clone(), classes: classes.to_vec(), samples, ignored: Vec::new() })
    }
}

/// The file as text: a regular file, at most [`MAX_FILE_BYTES`], UTF-8
/// (a byte-order mark dropped).
fn read_text(path: &Path) -> Result<String> {
    let metadata = std::fs::metadata(path).with_context(|| format!("--labels {}: cannot read", path.display()))?;
    if !metadata.is_file() {
        bail!("--labels {}: not a regular file", path.display());
    }
    if metadata.len() > MAX_FILE_BYTES {
        bail!(
            "--labels {}: {} bytes, more than a labels file may hold ({MAX_FILE_BYTES})",
            path.display(),
            metadata.len()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("--labels {}: cannot read", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count();
        anyhow::anyhow!("{} line {line}: not UTF-8 text", path.display())
    })?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text))
}

/// `,` for `.csv`, a tab for `.tsv` (any case).
fn field_delimiter(path: &Path) -> Result<char> {
    match path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).as_deref() {
        Some("csv") => Ok(','),
        Some("tsv") => Ok('\t'),
        _ => bail!("--labels {}: name a .csv or .tsv file (the extension gives the delimiter)", path.display()),
    }
}

/// A checksum of a labels file's bytes, to tell whether it changed
/// (`crc32c:` and 8 hex digits); an error for a file that is not a
/// readable `.csv` or `.tsv`.
pub fn digest(path: &Path) -> Result<String> {
    field_delimiter(path)?;
    let text = read_text(path)?;
    Ok(format!("crc32c:{:08x}", crc32c::crc32c(text.as_bytes())))
}

/// The columns the header names.
struct Columns {
    count: usize,
    path: usize,
    label: usize,
    split: Option<usize>,
}

impl Columns {
    fn of(header: &Record, file: &Path) -> Result<Self> {
        let names: Vec<String> = header.fields.iter().map(|f| f.trim().to_owned()).collect();
        let bad_header = |why: String| {
            anyhow::anyhow!(
                "{} line {}: {why} (the header names path and label, and optionally split)",
                file.display(),
                header.line
            )
        };
        if let Some(fault) = &header.fault {
            return Err(bad_header(fault.clone()));
        }
        let find = |name: &str| -> Result<Option<usize>> {
            match names.iter().filter(|n| *n == name).count() {
                0 => Ok(None),
                1 => Ok(names.iter().position(|n| n == name)),
                _ => Err(bad_header(format!("column {name:?} named twice"))),
            }
        };
        if let Some(unknown) = names.iter().find(|n| !["path", "label", "split"].contains(&n.as_str())) {
            return Err(bad_header(format!("unknown column {unknown:?}")));
        }
        let (path, label, split) = (find("path")?, find("label")?, find("split")?);
        let (Some(path), Some(label)) = (path, label) else {
            return Err(bad_header(format!("columns {names:?}")));
        };
        Ok(Self { count: names.len(), path, label, split })
    }

    /// The record as a row, or why it is bad.
    fn row(&self, record: &Record, reading: Reading) -> Result<Row, (Fault, String)> {
        if let Some(fault) = &record.fault {
            return Err((Fault::Quoting, fault.clone()));
        }
        if record.fields.len() != self.count {
            let why = format!("{} field(s) where the header has {}", record.fields.len(), self.count);
            return Err((Fault::FieldCount, why));
        }
        let field = |i: usize| record.fields[i].trim();
        let split = match self.split.map(field).unwrap_or("") {
            "" | "train" => Split::Train,
            "val" => Split::Val,
            other => return Err((Fault::UnknownSplit, format!("split {other:?} is neither train nor val"))),
        };
        let labels = labels_of(field(self.label), reading.label_delim);
        if labels.is_empty() {
            return Err((Fault::EmptyLabel, "empty label".into()));
        }
        let path = image_path(field(self.path), reading.root)?;
        Ok(Row { line: record.line, path, labels, split })
    }
}

/// The labels of a label field: itself, or its delimited parts (empty
/// parts dropped, each once, sorted).
fn labels_of(field: &str, delim: Option<char>) -> Vec<String> {
    let parts: BTreeSet<&str> = match delim {
        Some(delim) => field.split(delim).map(str::trim).filter(|part| !part.is_empty()).collect(),
        None => [field].into_iter().filter(|label| !label.is_empty()).collect(),
    };
    parts.into_iter().map(str::to_owned).collect()
}

/// The image a path field names, from `root` when relative: a regular
/// file (after symlinks) with an image extension.
fn image_path(field: &str, root: &Path) -> Result<PathBuf, (Fault, String)> {
    if field.is_empty() {
        return Err((Fault::EmptyPath, "empty path".into()));
    }
    let path = root.join(field);
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((Fault::MissingFile, format!("{}: no such file", path.display())))
        }
        Err(e) => return Err((Fault::MissingFile, format!("{}: cannot read ({e})", path.display()))),
    };
    let not_image = |what: &str| Err((Fault::NotAnImageFile, format!("{}: {what}", path.display())));
    if metadata.is_dir() {
        return not_image("a folder, not an image file");
    }
    if !metadata.is_file() {
        return not_image("not a regular file (a device, pipe or socket)");
    }
    if !has_image_extension(&path) {
        return not_image(&format!("not an image file by its extension ({})", IMAGE_EXTENSIONS.join(", ")));
    }
    Ok(path)
}

/// One record of the file: its fields, the line it starts on, and what
/// is wrong with its quoting, if anything.
struct Record {
    line: usize,
    fields: Vec<String>,
    fault: Option<String>,
}

impl Record {
    fn is_blank(&self) -> bool {
        self.fault.is_none() && self.fields.len() == 1 && self.fields[0].trim().is_empty()
    }
}

/// The records of CSV text (RFC 4180, any one-character delimiter): a
/// quoted field may hold delimiters, line breaks and doubled quotes.
struct Records<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    delim: char,
    line: usize,
}

impl<'a> Records<'a> {
    fn new(text: &'a str, delim: char) -> Self {
        Self { chars: text.chars().peekable(), delim, line: 1 }
    }

    /// The rest of a quoted field after its opening quote, up to and
    /// including its closing quote; false when the text ends first.
    fn quoted(&mut self, field: &mut String) -> bool {
        while let Some(c) = self.chars.next() {
            match c {
                '"' if self.chars.peek() == Some(&'"') => {
                    self.chars.next();
                    field.push('"');
                }
                '"' => return true,
                '\n' => {
                    self.line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
        }
        false
    }
}

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        self.chars.peek()?;
        let mut record = Record { line: self.line, fields: Vec::new(), fault: None };
        let mut field = String::new();
        let mut quoted_already = false;
        loop {
            match self.chars.next() {
                None => break,
                Some('\n') => {
                    self.line += 1;
                    break;
                }
                Some('\r') if self.chars.peek() == Some(&'\n') => {}
                Some(c) if c == self.delim => {
                    record.fields.push(std::mem::take(&mut field));
                    quoted_already = false;
                }
                Some('"') if !quoted_already && field.trim().is_empty() => {
                    quoted_already = true;
                    field.clear();
                    if !self.quoted(&mut field) {
                        record.fault.get_or_insert_with(|| "a quoted field is never closed".into());
                    }
                    let rest_of_field =
                        self.chars.peek().is_some_and(|&c| !matches!(c, '\n' | '\r') && c != self.delim);
                    if rest_of_field && !self.only_spaces_until_field_end() {
                        record.fault.get_or_insert_with(|| "text after a quoted field's closing quote".into());
                    }
                }
                Some(c) => field.push(c),
            }
        }
        record.fields.push(field);
        Some(record)
    }
}

impl Records<'_> {
    /// Skips spaces after a closing quote; whether the field ends there.
    fn only_spaces_until_field_end(&mut self) -> bool {
        while let Some(&c) = self.chars.peek() {
            match c {
                ' ' | '\t' if c != self.delim => {
                    self.chars.next();
                }
                _ => return c == self.delim || c == '\n' || c == '\r',
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<(usize, Vec<String>, bool)> {
        Records::new(text, ',').map(|r| (r.line, r.fields, r.fault.is_some())).collect()
    }

    fn strings(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn csv_records_follow_rfc_4180() {
        let text = "path,label\r\n\"a, b.jpg\",\"say \"\"hi\"\"\"\nc.jpg,\"two\nlines\"\nd.jpg,x\n";
        let got = records(text);
        assert_eq!(got[0], (1, strings(&["path", "label"]), false));
        assert_eq!(got[1], (2, strings(&["a, b.jpg", "say \"hi\""]), false));
        assert_eq!(got[2], (3, strings(&["c.jpg", "two\nlines"]), false));
        assert_eq!(got[3], (5, strings(&["d.jpg", "x"]), false));
        assert_eq!(got.len(), 4);
        let unclosed = records("a,\"open\nb,c\n");
        assert!(unclosed.len() == 1 && unclosed[0].2, "an unclosed quote runs to the end, a fault: {unclosed:?}");
        assert!(records("\"a\"b,c\n")[0].2, "text after a closing quote is a fault");
        assert_eq!(records("\"a\"  ,c")[0], (1, strings(&["a", "c"]), false));
        assert_eq!(records("a,,\n")[0].1, strings(&["a", "", ""]));
    }

    #[test]
    fn multi_label_fields_split_on_the_delimiter() {
        assert_eq!(labels_of("cat; dog;;cat ", Some(';')), strings(&["cat", "dog"]));
        assert_eq!(labels_of("b a", Some(' ')), strings(&["a", "b"]));
        assert_eq!(labels_of("cat; dog", None), strings(&["cat; dog"]));
        assert!(labels_of(" ; ", Some(';')).is_empty());
        assert!(labels_of("", None).is_empty());
    }
}
