//! Why the tool stops, and with which exit status.

use palisade_outbox::OutboxError;
use palisade_outbox::error_chain;

/// Why the tool stops without doing what was asked, and its exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: u8,
    pub(crate) message: String,
}

impl Failure {
    /// The operation failed: status 1.
    pub(crate) fn error(message: String) -> Self {
        Self { status: 1, message }
    }

    /// The command cannot run as given, or would change too much without `--yes`: status 2.
    pub(crate) fn usage(message: String) -> Self {
        Self { status: 2, message }
    }
}

impl From<OutboxError> for Failure {
    fn from(error: OutboxError) -> Self {
        Self::error(error_chain(&error))
    }
}
