//! The response future of [`ReqwestService`](crate::ReqwestService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::mark;

/// reqwest's own response future, named through its `Service` impl.
type Pending = <reqwest::Client as Service<reqwest::Request>>::Future;

pin_project! {
    /// The response future of [`ReqwestService`](crate::ReqwestService):
    /// reqwest's own future, with the response turned into an
    /// `http::Response` and the error marked (see the crate docs).
    ///
    /// Dropping it cancels the request, as dropping reqwest's future does.
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sending { #[pin] pending: Pending },
        Refused { error: Option<reqwest::Error> },
    }
}

impl ResponseFuture {
    pub(crate) fn sending(pending: Pending) -> Self {
        Self {
            state: State::Sending { pending },
        }
    }

    /// The request could not be turned into reqwest's (a URI without a scheme
    /// or host, say).
    pub(crate) fn refused(error: reqwest::Error) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<reqwest::Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sending { pending } => Poll::Ready(match ready!(pending.poll(cx)) {
                Ok(res) => Ok(res.into()),
                Err(error) => Err(mark(error)),
            }),
            StateProj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(error) => mark(error),
                None => "palisade-reqwest: response future polled after completion".into(),
            })),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Sending { .. } => "sending",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
    }
}
