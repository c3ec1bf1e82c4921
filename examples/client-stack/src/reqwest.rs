//! A small adapter that lets the same stack drive a `reqwest::Client`
//! (feature `reqwest`): [`ReqwestTransport`] is a tower service from
//! `http::Request` to `http::Response<Bytes>`, the shape the stack's layers
//! need, in place of hyper-util's client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use palisade::core::BoxError;

/// `reqwest::Client` as a tower service; cloning shares the client's pool.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// Sends through `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

/// The response future of [`ReqwestTransport`]: reqwest's own future is
/// unnameable, so the adapter boxes it.
pub type ReqwestFuture = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

impl<B> tower::Service<Request<B>> for ReqwestTransport
where
    B: http_body::Body + Send + Sync + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = ReqwestFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // reqwest's client queues internally; it is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client = self.client.clone();
        let req = reqwest::Request::try_from(req.map(reqwest::Body::wrap));
        Box::pin(async move {
            let res = client.execute(req?).await?;
            let mut answer = Response::builder().status(res.status()).version(res.version());
            if let Some(headers) = answer.headers_mut() {
                headers.extend(res.headers().iter().map(|(name, value)| (name.clone(), value.clone())));
            }
            Ok(answer.body(res.bytes().await?)?)
        })
    }
}
