//! `use palisade::prelude::*` beside tower-http's own `ServiceBuilderExt`:
//! both sets of builder methods stay callable.
#![cfg(feature = "bulkhead")]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade::bulkhead::BulkheadLayer;
use palisade::prelude::*;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_http::ServiceBuilderExt;

#[tokio::test]
async fn palisade_and_tower_http_builder_methods_are_both_in_scope() {
    let bulkhead = BulkheadLayer::builder("prelude").max_concurrent(1).build().unwrap();
    let service = ServiceBuilder::new()
        .bulkhead(bulkhead)
        .map_request_body(|body: String| body.to_uppercase())
        .service(service_fn(|req: http::Request<String>| async move {
            Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from(req.into_body()))))
        }));
    let answer = service
        .oneshot(http::Request::new("shields up".to_owned()))
        .await
        .unwrap();
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "SHIELDS UP");
}
