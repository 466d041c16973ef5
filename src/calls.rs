//! Reading call records back: `callbackd calls export` (CSV or JSON lines) and the API's
//! pages (`GET /api/v1/calls`), both oldest first from a point in time.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Subcommand, ValueEnum};
use store::{CallRecord, Store};
use uuid::Uuid;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// Print the call records that started since a time, oldest first.
    Export {
        /// An RFC 3339 time or a date (`2026-12-01`, from its midnight UTC); all without.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// A header line, then one line a call.
    Csv,
    /// One JSON object a line.
    Jsonl,
}

/// The columns of the CSV export, in order.
const COLUMNS: [&str; 18] = [
    "id",
    "call_id",
    "node",
    "direction",
    "from",
    "to",
    "entry",
    "attempt_id",
    "trunk",
    "started_at",
    "answered_at",
    "ended_at",
    "end_reason",
    "sip_status",
    "keys_source",
    "rtp_sent",
    "rtp_received",
    "rtp_lost",
];

/// How many records are read from the store at a time.
const PAGE: u32 = 1000;

/// A time as `--since` or `?since=` gives it: RFC 3339, or a date from its midnight (UTC).
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a date (YYYY-MM-DD)"))
}

/// Where a page starts: after this start time and, among calls that started then, this ID.
pub type Cursor = (DateTime<Utc>, Uuid);

/// The cursor of the page that starts at `since` (with the calls that started then).
pub fn from(since: DateTime<Utc>) -> Cursor {
    (since, Uuid::nil())
}

/// The cursor after `record`, as the API writes it: its start in nanoseconds and its ID.
pub fn cursor_after(record: &CallRecord) -> String {
    let nanos = record.started_at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    format!("{nanos}_{}", record.id.simple())
}

/// A cursor the API wrote.
pub fn parse_cursor(text: &str) -> Option<Cursor> {
    let (nanos, id) = text.split_once('_')?;
    let at = DateTime::from_timestamp_nanos(nanos.parse().ok()?);
    Some((at, Uuid::parse_str(id).ok()?))
}

pub async fn command(config: &Config, command: CallsCommand) -> anyhow::Result<()> {
    let CallsCommand::Export { since, format } = command;
    let since = match since {
        Some(text) => parse_since(&text).map_err(anyhow::Error::msg)?,
        None => DateTime::<Utc>::UNIX_EPOCH,
    };
    let store = Store::open(config.store.url.expose()).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Format::Csv = format {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    let mut cursor = from(since);
    loop {
        let page = store.calls(cursor, PAGE).await?;
        for record in &page {
            match format {
                Format::Csv => writeln!(out, "{}", csv_line(record))?,
                Format::Jsonl => writeln!(out, "{}", serde_json::to_string(record)?)?,
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => cursor = (last.started_at, last.id),
            _ => break,
        }
    }
    out.flush()?;
    store.close().await;
    Ok(())
}

/// One record as a CSV line (RFC 4180: a field with a comma, a quote or a line break is
/// quoted, its quotes doubled).
fn csv_line(r: &CallRecord) -> String {
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let fields = [
        r.id.to_string(),
        r.call_id.clone(),
        r.node.clone(),
        r.direction.clone(),
        r.from.clone(),
        r.to.clone(),
        r.entry.clone().unwrap_or_default(),
        r.attempt_id.map(|a| a.to_string()).unwrap_or_default(),
        r.trunk.clone().unwrap_or_default(),
        time(&r.started_at),
        r.answered_at.as_ref().map(time).unwrap_or_default(),
        time(&r.ended_at),
        r.end_reason.clone(),
        r.sip_status.map(|s| s.to_string()).unwrap_or_default(),
        r.keys_source.clone().unwrap_or_default(),
        r.rtp_sent.to_string(),
        r.rtp_received.to_string(),
        r.rtp_lost.to_string(),
    ];
    fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_dates_and_cursors_read_back() {
        assert_eq!(
            parse_since("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-12-01T10:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T09:00:00+00:00"
        );
        assert!(parse_since("yesterday")
            .unwrap_err()
            .contains("`yesterday`"));
        let record = CallRecord {
            id: Uuid::from_u128(7),
            started_at: parse_since("2026-12-01T10:00:00.123456789Z").unwrap(),
            ..Default::default()
        };
        assert_eq!(
            parse_cursor(&cursor_after(&record)),
            Some((record.started_at, record.id))
        );
        assert_eq!(parse_cursor("12_nope"), None);
        assert_eq!(parse_cursor("nope"), None);
    }

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        let record = CallRecord {
            from: "Ann \"A\", Jr".into(),
            ..Default::default()
        };
        let line = csv_line(&record);
        assert!(line.contains(",\"Ann \"\"A\"\", Jr\","), "{line}");
        assert_eq!(line.matches(',').count(), COLUMNS.len() - 1 + 1, "{line}");
    }
}
