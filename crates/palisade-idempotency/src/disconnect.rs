//! What becomes of a request whose caller goes away (the client
//! disconnects, a timeout layer outside fires: the response future is
//! dropped) after it locked its key. Chosen with
//! [`IdempotencyBuilder::on_disconnect`](crate::IdempotencyBuilder::on_disconnect);
//! see the [crate docs](crate#disconnects).

mod sealed {
    pub trait Sealed {}
}

/// A disconnect policy: [`Complete`] (the default), [`KeepLocked`] or
/// [`Release`].
pub trait Policy: sealed::Sealed + Send + Sync + 'static {}

/// The policies that run the protected call inside the response future:
/// [`KeepLocked`] and [`Release`].
pub trait InCaller: Policy {
    /// Whether dropping the response future releases the key.
    #[doc(hidden)]
    const RELEASE_ON_DROP: bool;
}

/// The default: once a request holds its key, the inner service's future,
/// reading its response and storing it run on a tokio task of their own, so
/// they finish, and the response is stored, whether or not the caller is
/// still there. A retry gets 409 while it runs and the stored response
/// after: the handler runs once.
///
/// Costs: the inner service's future, its response body and error must be
/// `Send + 'static` (axum's, hyper's and tonic's are), and every first
/// request spawns one task (one allocation and a hop through the
/// scheduler); replays and rejections spawn nothing. Task-locals of the
/// caller's task are not seen by the handler, but for the two palisade
/// carries over: the current tracing span, and the request's deadline
/// ([`Deadline::current`](palisade_core::deadline::Deadline::current), set
/// by palisade-deadline's server layer), which the clients the handler
/// calls go by.
/// Without a tokio runtime the call runs in the response future, as with
/// [`KeepLocked`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Complete;

/// The protected call runs inside the response future (no task, no extra
/// bounds); when that future is dropped after the key was locked, the key
/// stays locked until its lock expires, so a retry gets 409 until then and
/// runs the handler again only after it. A response already being stored,
/// or a key already being released, is stored or released from a task of
/// its own (see the [crate docs](crate#disconnects)).
/// Right for handlers that are not `Send`.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepLocked;

/// The protected call runs inside the response future; when that future is
/// dropped after the key was locked and before the handler answered, the key
/// is released (the release is spawned on the current tokio runtime, fenced
/// by the lease; without a runtime the lock expires), so a retry runs the
/// handler again. Only right for handlers whose effects are undone when
/// they are dropped (one database transaction that is rolled back, say).
/// A handler that answered was not dropped and its effects stand: dropped
/// after that, the request is treated as with [`KeepLocked`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Release;

impl sealed::Sealed for Complete {}
impl sealed::Sealed for KeepLocked {}
impl sealed::Sealed for Release {}
impl Policy for Complete {}
impl Policy for KeepLocked {}
impl Policy for Release {}

impl InCaller for KeepLocked {
    const RELEASE_ON_DROP: bool = false;
}

impl InCaller for Release {
    const RELEASE_ON_DROP: bool = true;
}
