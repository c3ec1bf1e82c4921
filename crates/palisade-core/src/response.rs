//! [`ProblemResponseLayer`]: answers a stack's errors with problem responses,
//! for servers without axum's `HandleErrorLayer` (a plain hyper server); and
//! [`ErrorResponseLayer`], the same service with another [`Answer`] (gRPC
//! statuses, in `palisade-grpc`).
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use palisade_core::{BoxError, response::ProblemResponseLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(ProblemResponseLayer::new())
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Err::<http::Response<Full<Bytes>>, BoxError>("database down".into())
//!     }));
//! // The service is infallible: hyper always gets a response.
//! let res = svc.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 500);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! # }
//! ```

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::problem::error_response;

/// How a server answers an error: the response it sends instead.
///
/// [`Problems`] answers HTTP with problem+json; `palisade-grpc` answers gRPC
/// with trailers-only statuses through the same [`ErrorResponse`] service.
/// The answer must carry nothing internal: the error's text stays on the server.
pub trait Answer<B> {
    /// The response that stands for `error`.
    fn answer(&self, error: &(dyn Error + 'static)) -> Response<B>;
}

/// Answers errors with RFC 9457 problem responses (see [`crate::problem`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Problems;

impl<B: From<Bytes>> Answer<B> for Problems {
    fn answer(&self, error: &(dyn Error + 'static)) -> Response<B> {
        error_response(error)
    }
}

/// Wraps a service so that its errors, from readiness or from the call,
/// become the responses its [`Answer`] gives, and the service is infallible.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorResponseLayer<A> {
    answer: A,
}

impl<A> ErrorResponseLayer<A> {
    /// The layer answering errors with `answer`.
    pub fn answering(answer: A) -> Self {
        Self { answer }
    }
}

/// Wraps a service so that its errors, from readiness or from the call,
/// become problem responses (see [`crate::problem`]) and the service is
/// infallible.
pub type ProblemResponseLayer = ErrorResponseLayer<Problems>;

impl ErrorResponseLayer<Problems> {
    /// The layer.
    pub fn new() -> Self {
        Self { answer: Problems }
    }
}

impl<S, A: Clone> Layer<S> for ErrorResponseLayer<A> {
    type Service = ErrorResponse<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse {
            inner,
            answer: self.answer.clone(),
            not_ready: None,
        }
    }
}

/// The service of [`ErrorResponseLayer`].
#[derive(Debug)]
pub struct ErrorResponse<S, A> {
    inner: S,
    answer: A,
    // A readiness error, answered to the next call: hyper drives readiness
    // before each call and has no other way to hear of it.
    not_ready: Option<BoxError>,
}

/// The service of [`ProblemResponseLayer`].
pub type ProblemResponse<S> = ErrorResponse<S, Problems>;

impl<S: Clone, A: Clone> Clone for ErrorResponse<S, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            answer: self.answer.clone(),
            not_ready: None,
        }
    }
}

impl<S, A, Req, B> Service<Req> for ErrorResponse<S, A>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    A: Answer<B> + Clone,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<S::Future, A>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none()
            && let Err(e) = ready!(self.inner.poll_ready(cx))
        {
            self.not_ready = Some(e.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let answer = self.answer.clone();
        match self.not_ready.take() {
            Some(error) => ErrorResponseFuture::Rejected {
                error: Some(error),
                answer,
            },
            None => ErrorResponseFuture::Called {
                future: self.inner.call(req),
                answer,
            },
        }
    }
}

pin_project! {
    /// The response future of [`ErrorResponse`].
    #[project = ErrorResponseProj]
    #[allow(missing_docs)]
    pub enum ErrorResponseFuture<F, A> {
        Called { #[pin] future: F, answer: A },
        Rejected { error: Option<BoxError>, answer: A },
    }
}

/// The response future of [`ProblemResponse`].
pub type ProblemResponseFuture<F> = ErrorResponseFuture<F, Problems>;

impl<F, A> std::fmt::Debug for ErrorResponseFuture<F, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorResponseFuture").finish_non_exhaustive()
    }
}

impl<F, A, B, E> Future for ErrorResponseFuture<F, A>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    A: Answer<B>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = match self.project() {
            ErrorResponseProj::Called { future, answer } => match ready!(future.poll(cx)) {
                Ok(res) => res,
                Err(e) => answer.answer(&*e.into()),
            },
            ErrorResponseProj::Rejected { error, answer } => match error.take() {
                Some(e) => answer.answer(&*e),
                None => panic!("ErrorResponseFuture polled after completion"),
            },
        };
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::Full;
    use tower::ServiceExt;

    use super::*;
    use crate::CircuitOpen;

    #[derive(Clone)]
    struct NeverReady;

    impl Service<()> for NeverReady {
        type Response = Response<Full<Bytes>>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<Full<Bytes>>, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err(CircuitOpen::new("upstream", Duration::from_secs(7)).into()))
        }

        fn call(&mut self, _: ()) -> Self::Future {
            unreachable!("never called: readiness failed")
        }
    }

    #[tokio::test]
    async fn readiness_errors_become_responses_without_calling_the_inner_service() {
        let res = ProblemResponseLayer::new().layer(NeverReady).oneshot(()).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "7");
    }

    #[tokio::test]
    async fn responses_pass_through_and_call_errors_become_responses() {
        let ok = tower::service_fn(|n: u16| async move {
            if n == 0 {
                Err::<Response<Full<Bytes>>, BoxError>(tower::timeout::error::Elapsed::new().into())
            } else {
                Ok(Response::builder().status(n).body(Full::from("body")).unwrap())
            }
        });
        let svc = ProblemResponseLayer::new().layer(ok);
        assert_eq!(svc.clone().oneshot(201).await.unwrap().status(), 201);
        assert_eq!(svc.oneshot(0).await.unwrap().status(), 504);
    }
}
