//! The text output (`--json` prints the library's types as JSON instead).

use std::time::Duration;

use palisade_outbox::DeadLetter;
use palisade_outbox::{Counts, Stats};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The longest last error a list shows before cutting it (`dead show` prints it whole).
const LIST_ERROR_CHARS: usize = 80;

/// "1 dead letter", "3 dead letters".
pub(crate) fn dead_letters(n: u64) -> String {
    if n == 1 {
        "1 dead letter".to_owned()
    } else {
        format!("{n} dead letters")
    }
}

/// `text` with its control characters (C0, DEL, C1) escaped as Rust writes them (`\u{1b}`,
/// `\n`): the text comes from outside (an error quotes a receiver's body), and raw, the
/// operator's terminal would act on them, and a line break would split a row.
fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON text with the control characters serde_json leaves raw in strings (DEL, C1) escaped
/// as JSON escapes them (`\u009b`); serde_json escapes the others, and the line breaks of
/// pretty printing stay.
fn visible_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_control() && c != '\n' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn timestamp(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// An age to the second (`1h 2m 3s`), `-` for none.
fn age(age: Option<Duration>) -> String {
    age.map_or_else(
        || "-".to_owned(),
        |age| humantime::format_duration(Duration::from_secs(age.as_secs())).to_string(),
    )
}

/// Rows of cells as left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn counts_row(name: &str, counts: &Counts) -> Vec<String> {
    vec![
        name.to_owned(),
        counts.pending.to_string(),
        counts.retrying.to_string(),
        age(counts.oldest_pending_age),
        counts.dead.to_string(),
        counts.published_last_minute.to_string(),
    ]
}

pub(crate) fn stats(stats: &Stats) -> String {
    let mut rows = vec![
        [
            "destination",
            "pending",
            "retrying",
            "oldest pending",
            "dead",
            "published last minute",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    rows.extend(
        stats
            .destinations
            .iter()
            .map(|d| counts_row(&visible(&d.destination), &d.counts)),
    );
    rows.push(counts_row("(total)", &stats.total));
    table(&rows)
}

pub(crate) fn list(list: &[DeadLetter]) -> String {
    if list.is_empty() {
        return "no dead letters\n".to_owned();
    }
    let mut rows = vec![
        [
            "seq",
            "event id",
            "event type",
            "aggregate",
            "destination",
            "attempts",
            "dead-lettered at",
            "last error",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for dead in list {
        let (id, event_type, aggregate, destination) = match &dead.event {
            Some(e) => (
                e.event_id.to_string(),
                visible(&e.event_type),
                visible(&format!("{}/{}", e.aggregate_type, e.aggregate_id)),
                visible(&e.destination),
            ),
            None => (
                "(unreadable row)".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ),
        };
        // Escaped before it is cut, so the cut bounds what shows.
        let error = visible(dead.last_error.as_deref().unwrap_or("-"));
        let error = match error.char_indices().nth(LIST_ERROR_CHARS) {
            Some((cut, _)) => format!("{}...", &error[..cut]),
            None => error,
        };
        rows.push(vec![
            dead.seq.to_string(),
            id,
            event_type,
            aggregate,
            destination,
            dead.attempts.to_string(),
            timestamp(dead.dead_lettered_at),
            error,
        ]);
    }
    table(&rows)
}

pub(crate) fn show(dead: &DeadLetter) -> String {
    let mut rows = vec![vec!["seq:".to_owned(), dead.seq.to_string()]];
    let mut payload = None;
    match &dead.event {
        Some(e) => {
            rows.extend([
                vec!["event id:".to_owned(), e.event_id.to_string()],
                vec!["event type:".to_owned(), visible(&e.event_type)],
                vec![
                    "aggregate:".to_owned(),
                    visible(&format!("{}/{}", e.aggregate_type, e.aggregate_id)),
                ],
                vec!["version:".to_owned(), e.version.to_string()],
                vec!["destination:".to_owned(), visible(&e.destination)],
                vec!["occurred at:".to_owned(), timestamp(e.timestamp)],
                vec![
                    "metadata:".to_owned(),
                    visible_json(&serde_json::to_string(&e.metadata).unwrap_or_default()),
                ],
            ]);
            payload = Some(visible_json(
                &serde_json::to_string_pretty(&e.payload).unwrap_or_default(),
            ));
        }
        None => rows.push(vec![
            "event:".to_owned(),
            "(the row cannot be read back as an event; see the last error)".to_owned(),
        ]),
    }
    rows.extend([
        vec!["attempts:".to_owned(), dead.attempts.to_string()],
        vec!["staged at:".to_owned(), timestamp(dead.staged_at)],
        vec!["dead-lettered at:".to_owned(), timestamp(dead.dead_lettered_at)],
        vec![
            "last error:".to_owned(),
            visible(dead.last_error.as_deref().unwrap_or("-")),
        ],
    ]);
    let width = rows.iter().map(|row| row[0].len()).max().unwrap_or(0);
    let mut out = String::new();
    for row in &rows {
        out.push_str(&format!("{:<width$} {}\n", row[0], row[1]));
    }
    if let Some(payload) = payload {
        out.push_str("payload:\n");
        out.push_str(&payload);
        out.push('\n');
    }
    out
}
