use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::uri::Scheme;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use palisade_core::deadline::Deadline;
use palisade_webhook::{InvalidId, Signer};
use tokio::time::{error::Elapsed, timeout_at};

use super::wire::{self, Spelling};
use super::{Publisher, PublisherHealth};
use crate::envelope::{Encoding, Event};
use crate::error::{ConfigError, PublishError};

/// How much of a refusing receiver's answer is kept in the error (and so in the dead letter).
const ERROR_BODY_LIMIT: usize = 512;

/// How much of a response body is read so its connection can be reused.
const DRAIN_LIMIT: usize = 64 * 1024;

const EVENT_TYPE: HeaderName = HeaderName::from_static("palisade-event-type");

/// How HTTP headers spell the CloudEvents attributes (the HTTP protocol binding's `ce-`
/// prefix) and the correlation id (the header the publish hook reads).
const SPELLING: Spelling = Spelling {
    ce_prefix: "ce-",
    correlation_id: Some("x-correlation-id"),
};

/// POSTs events as webhooks, signed by a [`Signer`], and waits for the receiver's answer.
///
/// The URL is the event's destination when that is an absolute `http://` or `https://` URL,
/// else the builder's [base URL](HttpPublisherBuilder::base_url) joined with the destination
/// by one `/` (base `http://hooks.internal/events` and destination `Order` give
/// `http://hooks.internal/events/Order`). The body is the [encoded](Encoding) event, with its
/// `Content-Type`, a `Palisade-Event-Type` header, the trace context and correlation id in
/// `traceparent`, `tracestate` and `X-Correlation-ID` when the event has them (one that is no
/// valid header value is left out with a warning), and the signer's headers. In
/// [CloudEvents binary mode](Encoding::CloudEventsBinary) the body is the payload and every
/// attribute is a `ce-` header (`ce-id`, `ce-source`, `ce-type`, `ce-subject`, ...),
/// percent-encoded as the HTTP binding asks. The event id is
/// the webhook id (`webhook-id` for Standard Webhooks, `X-GitHub-Delivery`,
/// `X-Shopify-Webhook-Id`), so every redelivery of an event carries the same id and a
/// receiver with replay protection drops the duplicate; each attempt is stamped by the
/// signer's clock and signed afresh, so a retry after a long backoff is not rejected as
/// stale. A generic scheme carries the event id in its configured id header; Stripe and
/// Slack signatures carry no id.
///
/// | answer | result |
/// |---|---|
/// | 2xx | delivered |
/// | 408, 429, 5xx | transient: retried with the relay's backoff |
/// | any other status (4xx, an unfollowed 3xx) | permanent: dead-lettered at once |
/// | connection refused or reset, a protocol error, no answer within the timeout | transient |
/// | a destination that is no http(s) URL, a relative one without a base URL | permanent |
///
/// `Retry-After` is not read: the relay's backoff decides when to try again. Redirects are
/// not followed: point the destination at the final URL.
///
/// The default connector speaks plain `http://` (HTTP/1.1 with keep-alive; the connection
/// pool is shared by clones). For `https://`, pass a TLS connector with
/// [`connector`](HttpPublisherBuilder::connector) (e.g. `hyper-rustls`'s `HttpsConnector`),
/// or send through a TLS-terminating proxy; without one, an `https` base URL is refused by
/// `build()` and an `https` destination is dead-lettered.
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// use std::time::Duration;
/// use palisade_outbox::{ConfigError, HttpPublisher, Relay, sqlite::SqliteStore};
/// use palisade_webhook::{Scheme, Signer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// // The receiver verifies with the same secret (palisade-webhook's VerifyLayer, or any
/// // Standard Webhooks library).
/// let signer = Signer::builder(Scheme::StandardWebhooks)
///     .secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
///     .build()?;
/// let publisher = HttpPublisher::builder(signer.clone())
///     .base_url("http://billing.internal/webhooks") // event `Order` goes to .../webhooks/Order
///     .timeout(Duration::from_secs(3))
///     .build()?;
/// let relay = Relay::builder(SqliteStore::new(pool), publisher).max_attempts(8).build()?;
/// # let _ = relay;
///
/// // https needs a TLS connector (`.connector(...)`) or a proxy.
/// let refused = HttpPublisher::builder(signer).base_url("https://billing.example.com/webhooks").build();
/// assert!(matches!(refused, Err(ConfigError::BaseUrl { .. })));
/// # Ok(())
/// # }
/// # }
/// ```
///
/// Each attempt takes a pooled connection or opens a new one, so a receiver that restarted or
/// closed its connections is reached again at the next attempt. [`health`](Publisher::health)
/// says whether the last attempt got an answer (any status) rather than a connection error or
/// a timeout.
#[derive(Debug, Clone)]
pub struct HttpPublisher<C = HttpConnector> {
    client: Client<C, Full<Bytes>>,
    reached: Arc<AtomicBool>,
    signer: Signer,
    base_url: Option<String>,
    encoding: Encoding,
    timeout: Duration,
    tls: bool,
}

/// Configures an [`HttpPublisher`].
#[derive(Debug)]
pub struct HttpPublisherBuilder<C = HttpConnector> {
    connector: C,
    signer: Signer,
    base_url: Option<String>,
    encoding: Encoding,
    timeout: Duration,
    tls: bool,
}

/// Why a webhook was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpPublishError {
    /// The receiver answered with a status other than 2xx.
    #[error("the receiver answered {status}{}", body_suffix(.body))]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the response body (lossy UTF-8, at most 512 bytes), for the dead letter.
        body: String,
    },
    /// No complete answer arrived within the publisher's timeout.
    #[error("no answer within {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
        /// The elapsed timer.
        #[source]
        source: Elapsed,
    },
    /// Connecting, sending or receiving failed.
    #[error("webhook request failed")]
    Transport(#[source] hyper_util::client::legacy::Error),
    /// The event's destination does not give a URL this publisher can send to.
    #[error("cannot send to destination {destination:?}: {reason}")]
    Destination {
        /// The event's destination.
        destination: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The webhook id could not be signed (the signer's id generator made an invalid one).
    #[error("webhook signing failed")]
    Signing(#[source] InvalidId),
    /// The event type is not a valid header value.
    #[error("event type {0:?} is not a valid header value")]
    EventType(String),
    /// A required CloudEvents attribute could not be made a header.
    #[error("the {0} header cannot be sent")]
    Header(String),
}

/// `value` percent-encoded as the CloudEvents HTTP binding asks of `ce-` header values: space,
/// `"`, `%` and every byte outside printable ASCII.
fn percent_encoded(value: &str) -> Cow<'_, str> {
    let plain = |b: u8| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%';
    if value.bytes().all(plain) {
        return Cow::Borrowed(value);
    }
    let mut encoded = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if plain(b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(encoded)
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl HttpPublisher {
    /// Starts configuring a publisher that signs with `signer`, over plain HTTP.
    pub fn builder(signer: Signer) -> HttpPublisherBuilder {
        HttpPublisherBuilder {
            connector: HttpConnector::new(),
            signer,
            base_url: None,
            encoding: Encoding::default(),
            timeout: Duration::from_secs(5),
            tls: false,
        }
    }
}

impl<C> HttpPublisherBuilder<C> {
    /// The URL that relative destinations are joined to (e.g. `http://hooks.internal/events`).
    /// Without one, only events whose destination is an absolute URL can be delivered.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// Sets the body encoding (default the palisade envelope as JSON).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// How long one attempt may take, from connecting to the end of the response (default
    /// 5 s). Keep it below the relay's `publish_timeout` (default 10 s), so the dead letter
    /// names the HTTP timeout and a slow answer after a 2xx status is not counted as a failure.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends through `connector` instead of the plain-HTTP one: a TLS connector for `https`
    /// URLs, a proxying one, or one with tuned DNS and socket options. It is trusted with
    /// `https` URLs.
    pub fn connector<D>(self, connector: D) -> HttpPublisherBuilder<D> {
        HttpPublisherBuilder {
            connector,
            signer: self.signer,
            base_url: self.base_url,
            encoding: self.encoding,
            timeout: self.timeout,
            tls: true,
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroPublishTimeout`] for a zero timeout; [`ConfigError::BaseUrl`] for a
    /// base URL that is not an absolute http(s) URL without query, or `https` without a TLS
    /// connector.
    pub fn build(self) -> Result<HttpPublisher<C>, ConfigError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroPublishTimeout);
        }
        if let Some(base) = &self.base_url {
            check_base_url(base, self.tls).map_err(|reason| ConfigError::BaseUrl {
                url: base.clone(),
                reason,
            })?;
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(self.connector);
        Ok(HttpPublisher {
            client,
            reached: Arc::new(AtomicBool::new(true)),
            signer: self.signer,
            base_url: self.base_url,
            encoding: self.encoding,
            timeout: self.timeout,
            tls: self.tls,
        })
    }
}

fn check_base_url(base: &str, tls: bool) -> Result<(), &'static str> {
    let uri: Uri = base.parse().map_err(|_| "not a valid URL")?;
    check_scheme(&uri, tls)?;
    if uri.query().is_some() {
        return Err("destinations are appended to its path, so it cannot have a query");
    }
    Ok(())
}

fn check_scheme(uri: &Uri, tls: bool) -> Result<(), &'static str> {
    if uri.authority().is_none() {
        return Err("not an absolute URL");
    }
    match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => Ok(()),
        Some(s) if *s == Scheme::HTTPS && tls => Ok(()),
        Some(s) if *s == Scheme::HTTPS => Err("https needs a TLS connector"),
        _ => Err("not an http or https URL"),
    }
}

fn is_absolute(destination: &str) -> bool {
    let has_prefix = |prefix: &str| {
        destination
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    has_prefix("http://") || has_prefix("https://")
}

impl<C> HttpPublisher<C> {
    /// The URL `destination` is sent to.
    fn target(&self, destination: &str) -> Result<Uri, HttpPublishError> {
        let invalid = |reason| HttpPublishError::Destination {
            destination: destination.to_owned(),
            reason,
        };
        let url = if is_absolute(destination) {
            Cow::Borrowed(destination)
        } else {
            let base = self
                .base_url
                .as_deref()
                .ok_or_else(|| invalid("not an absolute URL and no base URL is set"))?;
            Cow::Owned(format!(
                "{}/{}",
                base.trim_end_matches('/'),
                destination.trim_start_matches('/')
            ))
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a valid URL"))?;
        check_scheme(&uri, self.tls).map_err(invalid)?;
        Ok(uri)
    }

    /// The signed request for `event`.
    fn request(&self, event: &Event) -> Result<Request<Full<Bytes>>, HttpPublishError> {
        let uri = self.target(&event.destination)?;
        let body = Bytes::from(self.encoding.encode(event));
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.encoding.content_type()));
        headers.insert(USER_AGENT, HeaderValue::from_static("palisade-outbox"));
        let event_type = HeaderValue::try_from(event.event_type.as_str())
            .map_err(|_| HttpPublishError::EventType(event.event_type.clone()))?;
        headers.insert(EVENT_TYPE, event_type);
        for header in wire::headers(event, self.encoding, SPELLING) {
            let value = if header.name.starts_with(SPELLING.ce_prefix) {
                HeaderValue::try_from(percent_encoded(&header.value).as_ref())
            } else {
                HeaderValue::try_from(header.value.as_ref())
            };
            match (HeaderName::try_from(header.name.as_ref()), value) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                _ if header.required => return Err(HttpPublishError::Header(header.name.into_owned())),
                _ => wire::left_out(event, &header.name, "not a valid HTTP header value"),
            }
        }
        if let Some(name) = self.signer.id_header() {
            // The signer keeps an id it finds, so every attempt carries the event id.
            let id =
                HeaderValue::try_from(event.event_id.to_string()).map_err(|_| HttpPublishError::Signing(InvalidId))?;
            headers.insert(name, id);
        }
        self.signer
            .sign(&mut headers, &body)
            .map_err(HttpPublishError::Signing)?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

impl<C> HttpPublisher<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    async fn deliver(&self, request: Request<Full<Bytes>>) -> Result<(), PublishError> {
        // In tokio's range (about 30 years ahead at most), whatever the timeout.
        let deadline = Deadline::after(self.timeout).instant();
        let timed_out = |source| {
            PublishError::transient(HttpPublishError::Timeout {
                after: self.timeout,
                source,
            })
        };
        let response = timeout_at(deadline, self.client.request(request)).await;
        self.reached.store(matches!(response, Ok(Ok(_))), Ordering::Relaxed);
        let response = response
            .map_err(timed_out)?
            .map_err(|error| PublishError::transient(HttpPublishError::Transport(error)))?;
        let status = response.status();
        // Reading a small answer to its end lets the connection go back to the pool; after a
        // 2xx the event is delivered whatever happens to the rest.
        let body = timeout_at(deadline, Limited::new(response.into_body(), DRAIN_LIMIT).collect()).await;
        if status.is_success() {
            return Ok(());
        }
        let body = match body {
            Ok(Ok(collected)) => {
                let bytes = collected.to_bytes();
                String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_LIMIT)])
                    .trim()
                    .to_owned()
            }
            _ => String::new(),
        };
        let error = HttpPublishError::Status { status, body };
        if is_retryable(status) {
            Err(PublishError::transient(error))
        } else {
            Err(PublishError::permanent(error))
        }
    }
}

/// Statuses a later attempt may turn into a success.
fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

impl<C> Publisher for HttpPublisher<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        let request = self.request(event).map_err(PublishError::permanent)?;
        self.deliver(request).await
    }

    /// Connected unless the last attempt failed to connect, broke off or timed out.
    fn health(&self) -> PublisherHealth {
        if self.reached.load(Ordering::Relaxed) {
            PublisherHealth::Connected
        } else {
            PublisherHealth::Disconnected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::builder(palisade_webhook::Scheme::StandardWebhooks)
            .secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .build()
            .unwrap()
    }

    fn base_url_error(base: &str) -> Option<&'static str> {
        match HttpPublisher::builder(signer()).base_url(base).build() {
            Err(ConfigError::BaseUrl { url, reason }) => {
                assert_eq!(url, base);
                Some(reason)
            }
            Err(other) => panic!("{other}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn build_checks_the_base_url_and_timeout() {
        assert_eq!(base_url_error("http://hooks.internal:8080/events/"), None);
        assert_eq!(
            base_url_error("https://hooks.example.com"),
            Some("https needs a TLS connector")
        );
        assert_eq!(base_url_error("ftp://hooks.internal"), Some("not an http or https URL"));
        assert_eq!(base_url_error("/events"), Some("not an absolute URL"));
        assert_eq!(base_url_error("http://hooks internal"), Some("not a valid URL"));
        assert_eq!(
            base_url_error("http://hooks.internal/events?tenant=1"),
            Some("destinations are appended to its path, so it cannot have a query")
        );
        let zero = HttpPublisher::builder(signer()).timeout(Duration::ZERO).build();
        assert_eq!(zero.unwrap_err(), ConfigError::ZeroPublishTimeout);
        let with_connector = HttpPublisher::builder(signer())
            .base_url("https://hooks.example.com")
            .connector(HttpConnector::new())
            .build();
        assert!(with_connector.is_ok(), "a given connector is trusted with https");
    }

    #[test]
    fn destinations_join_the_base_url_with_one_slash() {
        let target = |base: &str, destination: &str| {
            let publisher = HttpPublisher::builder(signer()).base_url(base).build().unwrap();
            publisher.target(destination).map(|uri| uri.to_string())
        };
        for base in ["http://h/events", "http://h/events/"] {
            for destination in ["Order", "/Order"] {
                assert_eq!(target(base, destination).unwrap(), "http://h/events/Order");
            }
        }
        assert_eq!(target("http://h", "orders/created").unwrap(), "http://h/orders/created");
        assert_eq!(target("http://h/x", "HTTP://other:81/y").unwrap(), "http://other:81/y");
        assert_eq!(
            target("http://h/x", "http://other/y?a=1").unwrap(),
            "http://other/y?a=1"
        );
        let error = target("http://h", "order created").unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot send to destination \"order created\": not a valid URL"
        );
    }

    #[test]
    fn retryable_statuses() {
        for code in [408, 429, 500, 501, 502, 503, 504, 599] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [300, 301, 304, 400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 451] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn requests_carry_the_event_id_as_the_signed_webhook_id() {
        let publisher = HttpPublisher::builder(signer()).base_url("http://h").build().unwrap();
        let event = Event::new("OrderCreated", "Order", "o1", serde_json::json!({}));
        let request = publisher.request(&event).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://h/Order");
        let headers = request.headers();
        assert_eq!(headers["webhook-id"], event.event_id.to_string().as_str());
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["palisade-event-type"], "OrderCreated");
        let verifier = palisade_webhook::Verifier::builder(palisade_webhook::Scheme::StandardWebhooks)
            .secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .build()
            .unwrap();
        let verified = verifier.verify(headers, &event.to_json()).unwrap();
        assert_eq!(verified.id(), Some(event.event_id.to_string().as_str()));

        let cloud = HttpPublisher::builder(signer())
            .base_url("http://h")
            .encoding(Encoding::CloudEvents)
            .build()
            .unwrap();
        let request = cloud.request(&event).unwrap();
        assert_eq!(request.headers()["content-type"], "application/cloudevents+json");

        let bad_type = Event::new("Order\nCreated", "Order", "o1", serde_json::json!({}));
        assert!(matches!(
            publisher.request(&bad_type),
            Err(HttpPublishError::EventType(_))
        ));
    }

    #[test]
    fn requests_carry_the_trace_context_and_binary_mode_attributes_in_headers() {
        let event = Event::new("OrderCreated", "Order", "o 1", serde_json::json!({"a": 1}))
            .with_source("orders/ü")
            .with_correlation_id("corr-1")
            .with_trace_context(crate::TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: Some("bad\u{7f}state".into()),
            });
        let publisher = HttpPublisher::builder(signer()).base_url("http://h").build().unwrap();
        let request = publisher.request(&event).unwrap();
        let headers = request.headers();
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(headers["x-correlation-id"], "corr-1");
        assert!(headers.get("tracestate").is_none(), "no valid header value: left out");
        assert!(headers.get("ce-id").is_none());

        let binary = HttpPublisher::builder(signer())
            .base_url("http://h")
            .encoding(Encoding::CloudEventsBinary)
            .build()
            .unwrap();
        let request = binary.request(&event).unwrap();
        let headers = request.headers();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["ce-specversion"], "1.0");
        assert_eq!(headers["ce-id"], event.event_id.to_string().as_str());
        assert_eq!(headers["ce-source"], "orders/%C3%BC");
        assert_eq!(headers["ce-type"], "OrderCreated");
        assert_eq!(headers["ce-subject"], "o%201");
        assert_eq!(headers["ce-tracestate"], "bad%7Fstate");
    }

    #[test]
    fn every_attempt_of_an_event_carries_its_id_in_a_generic_schemes_id_header() {
        let scheme = || {
            palisade_webhook::Scheme::Generic(
                palisade_webhook::GenericScheme::new("X-Acme-Signature")
                    .id_header("X-Acme-Delivery")
                    .timestamp_header("X-Acme-Timestamp")
                    .template("{id}.{timestamp}.{body}"),
            )
        };
        let signer = Signer::builder(scheme()).secret("acme-secret").build().unwrap();
        let publisher = HttpPublisher::builder(signer).base_url("http://h").build().unwrap();
        let event = Event::new("OrderCreated", "Order", "o1", serde_json::json!({}));
        let first = publisher.request(&event).unwrap();
        let second = publisher.request(&event).unwrap();
        let id = event.event_id.to_string();
        assert_eq!(first.headers()["x-acme-delivery"], id.as_str());
        assert_eq!(second.headers()["x-acme-delivery"], id.as_str());
        let verifier = palisade_webhook::Verifier::builder(scheme())
            .secret("acme-secret")
            .build()
            .unwrap();
        for request in [&first, &second] {
            let verified = verifier.verify(request.headers(), &event.to_json()).unwrap();
            assert_eq!(verified.id(), Some(id.as_str()), "the signed id is the event id");
        }
    }
}
