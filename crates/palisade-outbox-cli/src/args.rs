//! The command line.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use palisade_outbox::DeadLetterId;

/// Operate palisade's transactional outbox: backlog stats, dead letters.
///
/// Works on the outbox tables of a PostgreSQL database (the schema in the connection's
/// search_path) or an SQLite file; it never creates or alters a table. Nothing is changed
/// in bulk without --yes: `dead requeue --all` and `dead purge` say how many dead letters
/// they would touch and exit with status 2.
#[derive(Debug, Parser)]
#[command(name = "palisade-outbox", version)]
pub(crate) struct Cli {
    /// The database: postgres://user@host/db (a schema with
    /// `?options=-c%20search_path%3Dmyschema`) or sqlite:path/to/file.db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub(crate) database_url: Option<String>,

    /// Print JSON for scripts instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Pending events, the oldest one's age, retrying and dead events, and events published in
    /// the last minute (kept only with a relay retention), per destination and in total.
    Stats,
    /// Dead-lettered events.
    #[command(subcommand)]
    Dead(Dead),
}

#[derive(Debug, Subcommand)]
pub(crate) enum Dead {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many (1 or more).
        #[arg(long, default_value_t = 100, value_parser = positive)]
        limit: usize,
    },
    /// Show one dead letter with its payload, metadata, error, attempts and timestamps.
    Show {
        /// Its sequence number (the `seq` column) or event id.
        id: DeadLetterId,
    },
    /// Put dead letters back in line, attempts reset; the relay publishes them at its next claim.
    Requeue {
        /// One dead letter: its sequence number or event id.
        #[arg(required_unless_present = "all", conflicts_with_all = ["all", "destination", "older_than", "yes"])]
        id: Option<DeadLetterId>,
        /// Every dead letter the filter selects (all of them without one). Needs --yes.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: Filter,
        /// Really requeue them all.
        #[arg(long, requires = "all")]
        yes: bool,
    },
    /// Delete dead letters older than an age, for good. Needs --yes.
    Purge {
        /// Only those dead-lettered longer ago than this (`7d`, `12h`, `30m`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Only those for this destination.
        #[arg(long)]
        destination: Option<String>,
        /// Really delete them.
        #[arg(long)]
        yes: bool,
    },
}

/// Which dead letters.
#[derive(Debug, Clone, Args)]
pub(crate) struct Filter {
    /// Only those for this destination.
    #[arg(long)]
    pub(crate) destination: Option<String>,
    /// Only those dead-lettered longer ago than this (`7d`, `12h`, `30m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) older_than: Option<Duration>,
}

/// A count of 1 or more: a list of at most none would print "no dead letters", which is not
/// what the outbox holds.
fn positive(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(error) => Err(error.to_string()),
    }
}
