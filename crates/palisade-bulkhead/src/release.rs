//! How long a call keeps its bulkhead permit once its response is there.

use crate::body::PermitBody;
use crate::gate::Permit;

/// Decides how long a call keeps its permit once its response is there.
///
/// [`OnResponse`] releases it with the response; [`OnBodyEnd`] moves it into
/// an `http::Response`'s body, released when the body has been sent.
pub trait PermitRelease<Res>: sealed::Sealed {
    /// The response the bulkhead returns.
    type Response;

    /// Hands `permit` over to the response, or drops it.
    fn attach(response: Res, permit: Permit) -> Self::Response;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::OnResponse {}
    impl Sealed for super::OnBodyEnd {}
}

/// The permit is released as soon as the inner service has answered (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct OnResponse;

impl<Res> PermitRelease<Res> for OnResponse {
    type Response = Res;

    fn attach(response: Res, permit: Permit) -> Res {
        drop(permit);
        response
    }
}

/// The permit is held by the `http::Response` body until it reaches its end,
/// fails, or is dropped, so a streamed response counts against the limit
/// while it streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnBodyEnd;

impl<B: http_body::Body> PermitRelease<http::Response<B>> for OnBodyEnd {
    type Response = http::Response<PermitBody<B>>;

    fn attach(response: http::Response<B>, permit: Permit) -> Self::Response {
        response.map(|body| PermitBody::new(body, permit))
    }
}
