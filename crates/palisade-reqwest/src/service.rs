//! [`ReqwestService`]: `reqwest::Client` as a tower `Service` over `http` types.

use std::task::{Context, Poll};

use bytes::Bytes;
use palisade_core::BoxError;
use tower_service::Service;

use crate::future::ResponseFuture;

/// `reqwest::Client` as a tower `Service<http::Request<B>>` answering
/// `http::Response<reqwest::Body>`, its errors `BoxError`s with reqwest's
/// timeouts and connect errors marked so palisade's classifiers recognise
/// them (see the crate docs).
///
/// Cloning is cheap and shares the client's connection pool.
#[derive(Debug, Clone, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Sends through `client`, with its settings (timeouts, TLS, proxies,
    /// pool).
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The client, consuming the service.
    pub fn into_inner(self) -> reqwest::Client {
        self.client
    }
}

impl From<reqwest::Client> for ReqwestService {
    fn from(client: reqwest::Client) -> Self {
        Self::new(client)
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: http_body::Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // reqwest's client is always ready: its pool queues inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // A request without a body goes with reqwest's own empty body, which
        // reqwest can copy: its client sends a request again by itself when
        // the server refused it unprocessed (HTTP/2 `REFUSED_STREAM`, a
        // graceful `GOAWAY`), but only when it can copy the body, and a
        // wrapped one it cannot.
        let req = req.map(|body| {
            if body.is_end_stream() {
                reqwest::Body::from(Bytes::new())
            } else {
                reqwest::Body::wrap(body)
            }
        });
        match reqwest::Request::try_from(req) {
            Ok(req) => ResponseFuture::sending(self.client.call(req)),
            Err(error) => ResponseFuture::refused(error),
        }
    }
}
