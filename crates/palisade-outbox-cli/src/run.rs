//! Each command, on any [`OutboxAdmin`] store.

use std::io::{self, Write};

use palisade_outbox::{DeadLetterFilter, DeadLetterId, OutboxAdmin};
use serde::Serialize;
use serde_json::json;

use crate::args::{Cli, Command, Dead, Filter};
use crate::connect::{Store, connect};
use crate::error::Failure;
use crate::render;

/// Whether `command` changes the outbox.
fn writes(command: &Command) -> bool {
    matches!(command, Command::Dead(Dead::Requeue { .. } | Dead::Purge { .. }))
}

pub(crate) async fn main(cli: Cli) -> Result<(), Failure> {
    let Some(url) = cli.database_url.as_deref() else {
        return Err(Failure::usage(
            "no database: pass --database-url or set DATABASE_URL".to_owned(),
        ));
    };
    match connect(url, writes(&cli.command)).await? {
        Store::Postgres(store) => command(&store, cli.command, cli.json).await,
        Store::Sqlite(store) => command(&store, cli.command, cli.json).await,
    }
}

fn filter(filter: Filter) -> DeadLetterFilter {
    DeadLetterFilter {
        destination: filter.destination,
        older_than: filter.older_than,
    }
}

/// Writes `value` to stdout as JSON, or as text by `text`.
fn write<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) -> io::Result<()> {
    // Not `print!`, which panics when stdout is a closed pipe.
    let mut out = io::stdout().lock();
    if json {
        // Serializing these plain structs cannot fail.
        writeln!(out, "{}", serde_json::to_string(value).unwrap_or_default())?;
    } else {
        out.write_all(text(value).as_bytes())?;
    }
    out.flush()
}

/// What failing to write the output means. A closed pipe is a reader that has read enough
/// (`palisade-outbox dead list | head -1`): the command is done, so nothing (status 0, no
/// message), as `head`'s other writers do. Any other error is a failure (status 1); after a
/// change, whose output is `done`, its message says what was done all the same.
fn written(result: io::Result<()>, done: Option<&str>) -> Result<(), Failure> {
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(Failure::error(match done {
            Some(done) => format!("{done}, but cannot write the output: {error}"),
            None => format!("cannot write the output: {error}"),
        })),
    }
}

/// Prints what a query found: `value` as JSON, or as text by `text`.
fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) -> Result<(), Failure> {
    written(write(json, value, text), None)
}

/// Prints what a change did: `value` as JSON, or `done` as a line of text.
fn print_done(json: bool, value: &serde_json::Value, done: &str) -> Result<(), Failure> {
    written(write(json, value, |_| format!("{done}\n")), Some(done))
}

fn no_such(id: DeadLetterId) -> Failure {
    Failure::error(format!("no dead letter with id {id}"))
}

/// "3 dead letters" and what selected them.
fn selection(n: u64, filter: &DeadLetterFilter) -> String {
    let mut text = render::dead_letters(n);
    if let Some(destination) = &filter.destination {
        text.push_str(&format!(" for destination {destination:?}"));
    }
    if let Some(age) = filter.older_than {
        text.push_str(&format!(
            " dead-lettered more than {} ago",
            humantime::format_duration(age)
        ));
    }
    text
}

async fn command<S: OutboxAdmin>(store: &S, command: Command, json: bool) -> Result<(), Failure> {
    match command {
        Command::Stats => print(json, &store.stats().await?, render::stats),
        Command::Dead(Dead::List { filter: f, limit }) => {
            print(json, &store.list_dead(&filter(f), limit).await?, |list| {
                render::list(list)
            })
        }
        Command::Dead(Dead::Show { id }) => {
            let dead = store.show_dead(id).await?.ok_or_else(|| no_such(id))?;
            print(json, &dead, render::show)
        }
        Command::Dead(Dead::Requeue { id: Some(id), .. }) => {
            if !store.requeue_dead(id).await? {
                return Err(no_such(id));
            }
            print_done(json, &json!({ "requeued": 1 }), &format!("requeued dead letter {id}"))
        }
        Command::Dead(Dead::Requeue {
            id: None,
            filter: f,
            yes,
            ..
        }) => {
            let filter = filter(f);
            if !yes {
                let n = store.count_dead(&filter).await?;
                return Err(Failure::usage(format!(
                    "would requeue {}; nothing done: add --yes to requeue them",
                    selection(n, &filter)
                )));
            }
            let n = store.requeue_dead_where(&filter).await?;
            print_done(
                json,
                &json!({ "requeued": n }),
                &format!("requeued {}", selection(n, &filter)),
            )
        }
        Command::Dead(Dead::Purge {
            older_than,
            destination,
            yes,
        }) => {
            let filter = DeadLetterFilter {
                destination,
                older_than: Some(older_than),
            };
            if !yes {
                let n = store.count_dead(&filter).await?;
                return Err(Failure::usage(format!(
                    "would delete {}; nothing done: add --yes to delete them",
                    selection(n, &filter)
                )));
            }
            let n = store.purge_dead(&filter).await?;
            print_done(
                json,
                &json!({ "purged": n }),
                &format!("deleted {}", selection(n, &filter)),
            )
        }
    }
}
