//! `palisade-outbox`: the operator's tool for palisade's transactional outbox.
//!
//! ```text
//! palisade-outbox --database-url postgres://app@db/orders stats
//! palisade-outbox dead list --destination Order
//! palisade-outbox dead show 42
//! palisade-outbox dead requeue 0193f1c2-8c4e-7b8a-9d3e-2f1a5b6c7d8e
//! palisade-outbox dead requeue --all --destination Order --yes
//! palisade-outbox dead purge --older-than 7d --yes
//! ```
//!
//! Every command takes `--json`. Exit status: 0 done, 1 failed (database, missing tables, no
//! such dead letter, output that cannot be written), 2 refused (bad arguments, or a bulk
//! change without `--yes`). A reader that stops early (`palisade-outbox dead list | head -1`)
//! is no failure: the tool stops writing and exits quietly with status 0, the command done
//! (a requeue or purge is committed before its output is written). See the palisade-outbox
//! crate docs, "Operating the outbox", for each command's output.
//!
//! # Install
//!
//! ```sh
//! cargo install palisade-outbox-cli
//! ```
//!
//! It reads PostgreSQL and SQLite databases; the binary is `palisade-outbox`.

mod args;
mod connect;
mod error;
mod render;
mod run;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;
use crate::error::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report(&Failure::error(format!("cannot start the runtime: {error}"))),
    };
    match runtime.block_on(run::main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(&failure),
    }
}

/// Writes why the tool stops to stderr (not `eprintln!`, which panics when it cannot) and gives
/// its exit status, written or not.
fn report(failure: &Failure) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "palisade-outbox: {}", failure.message);
    ExitCode::from(failure.status)
}
