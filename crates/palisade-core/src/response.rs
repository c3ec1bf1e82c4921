//! [`ProblemResponseLayer`]: answers a stack's errors with problem responses,
//! for servers without axum's `HandleErrorLayer` (a plain hyper server).
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

/// Wraps a service so that its errors, from readiness or from the call,
/// become problem responses (see [`crate::problem`]) and the service is
/// infallible.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemResponseLayer;

impl ProblemResponseLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for ProblemResponseLayer {
    type Service = ProblemResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProblemResponse { inner, not_ready: None }
    }
}

/// The service of [`ProblemResponseLayer`].
#[derive(Debug)]
pub struct ProblemResponse<S> {
    inner: S,
    // A readiness error, answered to the next call: hyper drives readiness
    // before each call and has no other way to hear of it.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for ProblemResponse<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S, Req, B> Service<Req> for ProblemResponse<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: From<Bytes>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ProblemResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none()
            && let Err(e) = ready!(self.inner.poll_ready(cx))
        {
            self.not_ready = Some(e.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.not_ready.take() {
            Some(error) => ProblemResponseFuture::Rejected { error: Some(error) },
            None => ProblemResponseFuture::Called {
                future: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// The response future of [`ProblemResponse`].
    #[project = ProblemResponseProj]
    #[allow(missing_docs)]
    pub enum ProblemResponseFuture<F> {
        Called { #[pin] future: F },
        Rejected { error: Option<BoxError> },
    }
}

impl<F> std::fmt::Debug for ProblemResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProblemResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ProblemResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: From<Bytes>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = match self.project() {
            ProblemResponseProj::Called { future } => match ready!(future.poll(cx)) {
                Ok(res) => res,
                Err(e) => error_response(&*e.into()),
            },
            ProblemResponseProj::Rejected { error } => match error.take() {
                Some(e) => error_response(&*e),
                None => panic!("ProblemResponseFuture polled after completion"),
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
