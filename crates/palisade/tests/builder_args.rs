//! Builder methods that take what a layer is made from, as tower-http's do:
//! `webhook_sign(signer)`, `webhook_verify(verifier)`, `outbox_hook(wakeup)`,
//! beside the configured layers they always took.
#![cfg(feature = "full")]

use bytes::Bytes;
use http_body_util::Full;
use palisade::outbox::{OutboxContext, PublishHookLayer, Wakeup};
use palisade::prelude::*;
use palisade::webhook::{Scheme, SignLayer, Signer, Verifier, VerifyLayer};
use tower::{ServiceBuilder, ServiceExt, service_fn};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn ok() -> http::Response<Full<Bytes>> {
    http::Response::new(Full::new(Bytes::new()))
}

#[tokio::test]
async fn a_signer_and_a_verifier_make_their_layers() -> Result<(), BoxError> {
    let verifier = || Verifier::builder(Scheme::StandardWebhooks).secret(SECRET).build();
    // The receiver: a verifier, with the defaults.
    let receiver = ServiceBuilder::new()
        .webhook_verify(verifier()?)
        .service(service_fn(|_req: http::Request<_>| async { Ok::<_, BoxError>(ok()) }));
    // The sender: a signer, handing the signed request to the receiver.
    let sender = ServiceBuilder::new()
        .webhook_sign(Signer::builder(Scheme::StandardWebhooks).secret(SECRET).build()?)
        .service(service_fn(move |req: http::Request<Full<Bytes>>| {
            receiver.clone().oneshot(req)
        }));
    let res = sender
        .oneshot(http::Request::post("/hooks").body(Full::new(Bytes::from_static(b"{}")))?)
        .await?;
    assert_eq!(res.status(), 200, "signed by the signer, accepted by the verifier");

    // Unsigned: refused by the layer the verifier made.
    let unsigned = ServiceBuilder::new()
        .webhook_verify(verifier()?)
        .service(service_fn(|_req: http::Request<_>| async { Ok::<_, BoxError>(ok()) }))
        .oneshot(http::Request::post("/hooks").body(Full::new(Bytes::from_static(b"{}")))?)
        .await?;
    assert_eq!(unsigned.status(), 400);

    // The configured layers still go in as before.
    let _ = ServiceBuilder::new()
        .webhook_verify(VerifyLayer::new(verifier()?))
        .webhook_sign(SignLayer::new(
            Signer::builder(Scheme::StandardWebhooks).secret(SECRET).build()?,
        ));
    Ok(())
}

#[tokio::test]
async fn a_wakeup_makes_the_publish_hook() -> Result<(), BoxError> {
    let wakeup = Wakeup::new();
    // The hook hands the handler an outbox context: it is in the stack.
    let svc = ServiceBuilder::new().outbox_hook(wakeup.clone()).service(service_fn(
        |req: http::Request<Full<Bytes>>| async move {
            assert!(req.extensions().get::<OutboxContext>().is_some(), "no outbox context");
            Ok::<_, BoxError>(ok())
        },
    ));
    let res = svc
        .oneshot(http::Request::post("/orders").body(Full::new(Bytes::new()))?)
        .await?;
    assert_eq!(res.status(), 200);
    let _ = ServiceBuilder::new().outbox_hook(PublishHookLayer::new(wakeup));
    Ok(())
}
