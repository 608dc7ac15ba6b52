//! Records in and out of a data file: JSON Lines, delimiter-separated values, `name=value` lines.
//! The writer learns each field's JSON type as it goes (for the manifest's schema); the reader
//! uses the schema to turn text back into the JSON the records were.

use crate::manifest::{Field, FieldKind, RecordFormat, Schema};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

/// Counts and hashes every byte written through it.
#[derive(Debug)]
pub(crate) struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that reports what went through it to a [`Digest`] it shares (the decoder owns the
/// reader; the importer reads the digest once the decoder is done).
#[derive(Debug)]
pub(crate) struct SharedDigest {
    state: std::rc::Rc<std::cell::RefCell<(Sha256, u64)>>,
}

/// A reader feeding a [`SharedDigest`].
#[derive(Debug)]
pub(crate) struct DigestReader<R> {
    inner: R,
    state: std::rc::Rc<std::cell::RefCell<(Sha256, u64)>>,
}

impl SharedDigest {
    pub(crate) fn reader<R: Read>(inner: R) -> (DigestReader<R>, SharedDigest) {
        let state = std::rc::Rc::new(std::cell::RefCell::new((Sha256::new(), 0)));
        (
            DigestReader {
                inner,
                state: state.clone(),
            },
            SharedDigest { state },
        )
    }

    /// The byte count and the SHA-256 (lowercase hex) of what was read so far.
    pub(crate) fn finish(&self) -> (u64, String) {
        let state = self.state.borrow();
        (state.1, hex::encode(state.0.clone().finalize()))
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.borrow_mut();
        state.0.update(&buf[..n]);
        state.1 += n as u64;
        Ok(n)
    }
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the byte count and the SHA-256 (lowercase hex).
    pub(crate) fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.hasher.finalize()))
    }
}

/// Why a record could not be written (the exporter adds the record number).
#[derive(Debug)]
pub(crate) enum EncodeError {
    Io(io::Error),
    NotAnObject,
    UnexpectedField(String),
    FieldTypeChanged {
        field: String,
        was: FieldKind,
        now: FieldKind,
    },
}

impl From<io::Error> for EncodeError {
    fn from(error: io::Error) -> Self {
        EncodeError::Io(error)
    }
}

impl From<csv::Error> for EncodeError {
    fn from(error: csv::Error) -> Self {
        EncodeError::Io(io::Error::other(error))
    }
}

type Out = Hashing<BufWriter<File>>;

#[derive(Debug)]
struct FieldState {
    name: String,
    kind: Option<FieldKind>,
    nullable: bool,
}

impl FieldState {
    fn new(name: &str) -> Self {
        FieldState {
            name: name.to_owned(),
            kind: None,
            nullable: false,
        }
    }

    /// The text of a value of this field, learning the field's type from its first non-null value.
    fn text(&mut self, value: Option<&Value>) -> Result<String, EncodeError> {
        let value = match value {
            None | Some(Value::Null) => {
                self.nullable = true;
                return Ok(String::new());
            }
            Some(value) => value,
        };
        let now = kind_of(value);
        let kind = *self.kind.get_or_insert(now);
        if kind == FieldKind::Json {
            return Ok(value.to_string());
        }
        if kind != now {
            return Err(EncodeError::FieldTypeChanged {
                field: self.name.clone(),
                was: kind,
                now,
            });
        }
        Ok(match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn into_field(self) -> Field {
        Field {
            name: self.name,
            // A field that was null in every record: its empty values read back as null.
            kind: self.kind.unwrap_or(FieldKind::String),
            nullable: self.nullable,
        }
    }
}

fn kind_of(value: &Value) -> FieldKind {
    match value {
        Value::String(_) | Value::Null => FieldKind::String,
        Value::Number(_) => FieldKind::Number,
        Value::Bool(_) => FieldKind::Bool,
        Value::Array(_) | Value::Object(_) => FieldKind::Json,
    }
}

/// Writes records to a data file in one format.
#[derive(Debug)]
pub(crate) struct Encoder {
    format: RecordFormat,
    sink: Sink,
    fields: Vec<FieldState>,
    index: HashMap<String, usize>,
}

#[derive(Debug)]
enum Sink {
    Plain(Out),
    Csv(Box<csv::Writer<Out>>),
}

impl Encoder {
    pub(crate) fn new(format: RecordFormat, file: File) -> Self {
        let out = Hashing::new(BufWriter::with_capacity(64 * 1024, file));
        let sink = match format {
            RecordFormat::Delimited { delimiter } => Sink::Csv(Box::new(
                csv::WriterBuilder::new()
                    .delimiter(delimiter as u8)
                    .terminator(csv::Terminator::Any(b'\n'))
                    .has_headers(false)
                    .from_writer(out),
            )),
            _ => Sink::Plain(out),
        };
        Encoder {
            format,
            sink,
            fields: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Writes one record (already JSON).
    pub(crate) fn write(&mut self, record: &Value) -> Result<(), EncodeError> {
        if !self.format.is_textual() {
            let Sink::Plain(out) = &mut self.sink else {
                unreachable!("JSON Lines writes to a plain sink")
            };
            serde_json::to_writer(&mut *out, record).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
            return Ok(());
        }
        let Value::Object(object) = record else {
            return Err(EncodeError::NotAnObject);
        };
        match &mut self.sink {
            Sink::Csv(csv) => {
                if self.fields.is_empty() && !object.is_empty() {
                    // The first record fixes the columns; the header line is written with it.
                    for name in object.keys() {
                        self.index.insert(name.clone(), self.fields.len());
                        self.fields.push(FieldState::new(name));
                    }
                    csv.write_record(self.fields.iter().map(|f| f.name.as_str()))?;
                }
                if let Some(extra) = object.keys().find(|k| !self.index.contains_key(*k)) {
                    return Err(EncodeError::UnexpectedField(extra.clone()));
                }
                let row = self
                    .fields
                    .iter_mut()
                    .map(|field| {
                        let value = object.get(&field.name);
                        field.text(value)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                csv.write_record(&row)?;
            }
            Sink::Plain(out) => {
                let mut line = form_urlencoded::Serializer::new(String::new());
                for (name, value) in object {
                    let at = match self.index.get(name) {
                        Some(at) => *at,
                        None => {
                            self.index.insert(name.clone(), self.fields.len());
                            self.fields.push(FieldState::new(name));
                            self.fields.len() - 1
                        }
                    };
                    let text = self.fields[at].text(Some(value))?;
                    line.append_pair(name, &text);
                }
                // A field missing from this record reads back as null.
                for field in &mut self.fields {
                    if !object.contains_key(&field.name) {
                        field.nullable = true;
                    }
                }
                out.write_all(line.finish().as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Flushes the file; returns it with the schema, the byte count and the SHA-256.
    pub(crate) fn finish(self) -> io::Result<(File, Schema, u64, String)> {
        let out = match self.sink {
            Sink::Plain(out) => out,
            Sink::Csv(csv) => csv.into_inner().map_err(|e| e.into_error())?,
        };
        let (buffered, bytes, sha256) = out.finish();
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        let schema = Schema {
            format: self.format,
            fields: self
                .fields
                .into_iter()
                .map(FieldState::into_field)
                .collect(),
        };
        Ok((file, schema, bytes, sha256))
    }
}

/// One record read back from a data file.
#[derive(Debug)]
pub(crate) struct RawRecord {
    /// 1-based; the line number in JSON Lines and `name=value` files, the row after the header in
    /// delimited files.
    pub(crate) number: u64,
    /// The record as JSON text, or why it cannot be read.
    pub(crate) payload: Result<String, String>,
    /// The record as it stands in the file (for a dead letter).
    pub(crate) raw: String,
}

/// Reads the records of a data file, in order.
#[derive(Debug)]
pub(crate) struct Decoder<R> {
    schema: Schema,
    fields: HashMap<String, Field>,
    source: Source<R>,
    next: u64,
}

#[derive(Debug)]
enum Source<R> {
    Lines(BufReader<R>),
    Csv {
        reader: Box<csv::Reader<BufReader<R>>>,
        header: Option<Vec<String>>,
    },
}

impl<R: Read> Decoder<R> {
    pub(crate) fn new(schema: &Schema, file: R) -> Self {
        let buffered = BufReader::with_capacity(64 * 1024, file);
        let source = match schema.format {
            RecordFormat::Delimited { delimiter } => Source::Csv {
                reader: Box::new(
                    csv::ReaderBuilder::new()
                        .delimiter(delimiter as u8)
                        .has_headers(false)
                        .flexible(true)
                        .from_reader(buffered),
                ),
                header: None,
            },
            _ => Source::Lines(buffered),
        };
        Decoder {
            fields: schema
                .fields
                .iter()
                .map(|f| (f.name.clone(), f.clone()))
                .collect(),
            schema: schema.clone(),
            source,
            next: 1,
        }
    }

    /// The next record, `None` at the end of the file.
    pub(crate) fn next_record(&mut self) -> io::Result<Option<RawRecord>> {
        let number = self.next;
        let record = match &mut self.source {
            Source::Lines(reader) => {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    return Ok(None);
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                match String::from_utf8(line) {
                    Err(e) => RawRecord {
                        number,
                        payload: Err("the line is not UTF-8".to_owned()),
                        raw: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    },
                    Ok(line) if self.schema.format.is_textual() => RawRecord {
                        number,
                        payload: self.name_value(&line),
                        raw: line,
                    },
                    Ok(line) => RawRecord {
                        number,
                        payload: Ok(line.clone()),
                        raw: line,
                    },
                }
            }
            Source::Csv { reader, header } => {
                let mut row = csv::ByteRecord::new();
                if header.is_none() {
                    if !reader.read_byte_record(&mut row).map_err(csv_io)? {
                        return Ok(None);
                    }
                    header.replace(
                        row.iter()
                            .map(|f| String::from_utf8_lossy(f).into_owned())
                            .collect(),
                    );
                }
                if !reader.read_byte_record(&mut row).map_err(csv_io)? {
                    return Ok(None);
                }
                let columns = header.as_deref().unwrap_or_default();
                let cells: Vec<String> = row
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                let raw = cells.join(&char::from(row_delimiter(&self.schema)).to_string());
                let payload = if std::str::from_utf8(row.as_slice()).is_err() {
                    Err("the row is not UTF-8".to_owned())
                } else if cells.len() != columns.len() {
                    Err(format!(
                        "the row has {} values, the header {} names",
                        cells.len(),
                        columns.len()
                    ))
                } else {
                    let fields = &self.fields;
                    columns
                        .iter()
                        .zip(&cells)
                        .map(|(name, text)| {
                            value_of(fields.get(name), text).map(|v| (name.clone(), v))
                        })
                        .collect::<Result<Map<_, _>, _>>()
                        .map(|object| Value::Object(object).to_string())
                };
                RawRecord {
                    number,
                    payload,
                    raw,
                }
            }
        };
        self.next += 1;
        Ok(Some(record))
    }

    fn name_value(&self, line: &str) -> Result<String, String> {
        form_urlencoded::parse(line.as_bytes())
            .map(|(name, text)| {
                value_of(self.fields.get(name.as_ref()), &text).map(|v| (name.into_owned(), v))
            })
            .collect::<Result<Map<_, _>, _>>()
            .map(|object| Value::Object(object).to_string())
    }
}

fn row_delimiter(schema: &Schema) -> u8 {
    match schema.format {
        RecordFormat::Delimited { delimiter } => delimiter as u8,
        _ => b',',
    }
}

fn csv_io(error: csv::Error) -> io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => error,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    }
}

/// The JSON value of a field's text, by the schema.
fn value_of(field: Option<&Field>, text: &str) -> Result<Value, String> {
    let Some(field) = field else {
        // A field the manifest does not list: kept as text.
        return Ok(Value::String(text.to_owned()));
    };
    if text.is_empty() && field.nullable {
        return Ok(Value::Null);
    }
    let bad = |what: &str| format!("field `{}`: `{text}` is not {what}", field.name);
    match field.kind {
        FieldKind::String => Ok(Value::String(text.to_owned())),
        FieldKind::Number => serde_json::from_str::<serde_json::Number>(text)
            .map(Value::Number)
            .map_err(|_| bad("a number")),
        FieldKind::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(bad("`true` or `false`")),
        },
        // A JSON field accepts any JSON the writer put there; an unknown kind reads as text.
        FieldKind::Json => serde_json::from_str(text).map_err(|_| bad("JSON")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(format: RecordFormat, records: &[Value]) -> Vec<Result<Value, String>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        let mut encoder = Encoder::new(format, File::create(&path).expect("create"));
        for record in records {
            encoder
                .write(record)
                .map_err(|e| format!("{e:?}"))
                .expect("write");
        }
        let (_, schema, bytes, _) = encoder.finish().expect("finish");
        assert_eq!(bytes, std::fs::metadata(&path).expect("metadata").len());
        let mut decoder = Decoder::new(&schema, File::open(&path).expect("open"));
        let mut out = Vec::new();
        while let Some(record) = decoder.next_record().expect("read") {
            assert_eq!(record.number, out.len() as u64 + 1);
            out.push(
                record
                    .payload
                    .map(|p| serde_json::from_str(&p).expect("JSON")),
            );
        }
        out
    }

    #[test]
    fn every_format_reads_back_the_json_it_wrote() {
        let records = vec![
            json!({"id": 1, "code": "007", "paid": true, "note": "a, \"quoted\"\nline", "tags": ["x"], "memo": null}),
            json!({"id": 2.5, "code": "", "paid": false, "note": "tab\there & = %", "tags": [], "memo": "m"}),
        ];
        for format in [
            RecordFormat::JsonLines,
            RecordFormat::CSV,
            RecordFormat::TSV,
            RecordFormat::NameValue,
        ] {
            let read = round_trip(format, &records);
            let expected: Vec<Result<Value, String>> = records.iter().cloned().map(Ok).collect();
            assert_eq!(read, expected, "{format:?}");
        }
    }

    #[test]
    fn a_field_that_changes_type_is_refused_in_textual_formats() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = File::create(dir.path().join("d")).expect("create");
        let mut encoder = Encoder::new(RecordFormat::CSV, file);
        encoder
            .write(&json!({"a": 1}))
            .map_err(|e| format!("{e:?}"))
            .expect("first");
        assert!(matches!(
            encoder.write(&json!({"a": "one"})),
            Err(EncodeError::FieldTypeChanged { .. })
        ));
        assert!(matches!(
            encoder.write(&json!({"b": 1})),
            Err(EncodeError::UnexpectedField(f)) if f == "b"
        ));
    }

    #[test]
    fn a_bad_value_is_a_malformed_record_not_an_error() {
        let schema = Schema {
            format: RecordFormat::NameValue,
            fields: vec![Field {
                name: "n".into(),
                kind: FieldKind::Number,
                nullable: false,
            }],
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("d");
        std::fs::write(&path, "n=1\nn=x\n").expect("write");
        let mut decoder = Decoder::new(&schema, File::open(&path).expect("open"));
        assert_eq!(
            decoder.next_record().expect("1").expect("some").payload,
            Ok("{\"n\":1}".into())
        );
        let bad = decoder.next_record().expect("2").expect("some");
        assert_eq!(bad.payload, Err("field `n`: `x` is not a number".into()));
        assert_eq!(bad.raw, "n=x");
        assert!(decoder.next_record().expect("end").is_none());
    }
}
