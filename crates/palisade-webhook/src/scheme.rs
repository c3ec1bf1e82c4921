//! The signature schemes: which headers carry what, and which bytes are signed.
//!
//! | scheme | signature header | signed content | encoding | timestamp | message id |
//! |---|---|---|---|---|---|
//! | [`StandardWebhooks`](Scheme::StandardWebhooks) | `webhook-signature` (or `svix-signature`): `v1,<sig> v1a,<sig>` | `{id}.{timestamp}.{body}` | base64 | `webhook-timestamp` | `webhook-id` |
//! | [`Stripe`](Scheme::Stripe) | `Stripe-Signature`: `t=<ts>,v1=<sig>,v1=<sig>` | `{timestamp}.{body}` | hex | `t=` | the event's `id` in the JSON body |
//! | [`GitHub`](Scheme::GitHub) | `X-Hub-Signature-256`: `sha256=<sig>` | `{body}` | hex | none | `X-GitHub-Delivery` |
//! | [`Slack`](Scheme::Slack) | `X-Slack-Signature`: `v0=<sig>` | `v0:{timestamp}:{body}` | hex | `X-Slack-Request-Timestamp` | none |
//! | [`Shopify`](Scheme::Shopify) | `X-Shopify-Hmac-Sha256`: `<sig>` | `{body}` | base64 | none | `X-Shopify-Webhook-Id` |
//! | [`Generic`](Scheme::Generic) | configured | configured template | hex or base64 | optional header | optional header |
//!
//! Every HMAC is HMAC-SHA256. Standard Webhooks also defines `v1a`, an
//! ed25519 signature over the same content, verified against `whpk_` public keys.

use http::HeaderName;

use crate::error::ConfigError;

/// Which scheme verified or signed a message; also the `scheme` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemeKind {
    /// Standard Webhooks / Svix.
    StandardWebhooks,
    /// Stripe.
    Stripe,
    /// GitHub.
    GitHub,
    /// Slack.
    Slack,
    /// Shopify.
    Shopify,
    /// A configured generic HMAC scheme.
    Generic,
}

impl SchemeKind {
    /// The label used in metrics and logs: `standard_webhooks`, `stripe`, `github`, `slack`, `shopify`, `generic`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard_webhooks",
            Self::Stripe => "stripe",
            Self::GitHub => "github",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
            Self::Generic => "generic",
        }
    }
}

/// A signature scheme, for the verifier and the signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// [Standard Webhooks](https://www.standardwebhooks.com/) (and Svix, with `svix-` headers).
    /// Secrets are `whsec_` + base64; public keys `whpk_` + base64; signing keys `whsk_` + base64.
    StandardWebhooks,
    /// Stripe. The whole `whsec_...` string is the HMAC key.
    Stripe,
    /// GitHub (`X-Hub-Signature-256`). The secret string is the key.
    GitHub,
    /// Slack (signing secret, `v0` signatures).
    Slack,
    /// Shopify (`X-Shopify-Hmac-Sha256`). The app's client secret is the key.
    Shopify,
    /// An HMAC-SHA256 scheme described by its headers, template, encoding and prefix.
    Generic(GenericScheme),
}

impl Scheme {
    /// The kind of scheme.
    pub fn kind(&self) -> SchemeKind {
        match self {
            Self::StandardWebhooks => SchemeKind::StandardWebhooks,
            Self::Stripe => SchemeKind::Stripe,
            Self::GitHub => SchemeKind::GitHub,
            Self::Slack => SchemeKind::Slack,
            Self::Shopify => SchemeKind::Shopify,
            Self::Generic(_) => SchemeKind::Generic,
        }
    }
}

/// How signatures are written in a generic scheme's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Lower-case hex (upper case is accepted when verifying).
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// A generic HMAC-SHA256 scheme.
///
/// The signed content is a template over `{id}`, `{timestamp}` and `{body}`
/// (default `{body}`); every other character is literal, and `{{` / `}}`
/// stand for braces. The signature header may carry several signatures
/// separated by spaces or commas, each `prefix + encoded MAC`; values without
/// the prefix are skipped as another version.
///
/// An id or timestamp header must be signed: the template has to use
/// `{id}` when there is an id header and `{timestamp}` when there is a
/// timestamp header, or the verifier's and signer's `build()` fail with
/// [`ConfigError::UnsignedHeader`]. An unsigned id could be changed to replay
/// a captured message past replay protection, and an unsigned timestamp to
/// pass the freshness check.
///
/// ```
/// use palisade_webhook::{Encoding, GenericScheme};
///
/// let acme = GenericScheme::new("X-Acme-Signature")
///     .timestamp_header("X-Acme-Timestamp")
///     .id_header("X-Acme-Delivery")
///     .template("{id}.{timestamp}.{body}")
///     .encoding(Encoding::Base64)
///     .prefix("v1=");
/// # let _ = acme;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericScheme {
    pub(crate) signature_header: String,
    pub(crate) timestamp_header: Option<String>,
    pub(crate) id_header: Option<String>,
    pub(crate) template: String,
    pub(crate) encoding: Encoding,
    pub(crate) prefix: String,
}

impl GenericScheme {
    /// A scheme whose signatures are in `signature_header`, over the body alone, hex, no prefix.
    pub fn new(signature_header: impl Into<String>) -> Self {
        Self {
            signature_header: signature_header.into(),
            timestamp_header: None,
            id_header: None,
            template: "{body}".to_owned(),
            encoding: Encoding::Hex,
            prefix: String::new(),
        }
    }

    /// The header carrying the Unix timestamp (checked against the tolerance).
    /// The template must sign it with `{timestamp}`.
    pub fn timestamp_header(mut self, name: impl Into<String>) -> Self {
        self.timestamp_header = Some(name.into());
        self
    }

    /// The header carrying the message id (for `{id}` and replay protection).
    /// The template must sign it with `{id}`.
    pub fn id_header(mut self, name: impl Into<String>) -> Self {
        self.id_header = Some(name.into());
        self
    }

    /// The signed-content template, e.g. `{timestamp}.{body}`.
    ///
    /// An `{id}` needs text on each side it meets another placeholder, and
    /// an id holding the byte of that text that touches it on the side of
    /// `{body}` is refused (400; the signer refuses to sign it): were it
    /// allowed, one signed content could be read as another id and another
    /// body (`{id}.{body}`: id `7`, body `a.b` against id `7.a`, body `b`),
    /// both verifying. Only that byte: with `v1:{id}.{body}`, ids may hold
    /// `v`, `1` and `:` but not `.`.
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

    /// How the MAC is encoded.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The text before each encoded MAC, e.g. `sha256=`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub(crate) fn compile(&self) -> Result<CompiledGeneric, ConfigError> {
        let header = |name: &str| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::InvalidHeaderName(name.to_owned()))
        };
        let signature_header = header(&self.signature_header)?;
        let timestamp_header = self.timestamp_header.as_deref().map(header).transpose()?;
        let id_header = self.id_header.as_deref().map(header).transpose()?;
        let template = Template::parse(&self.template)?;
        if template.uses(Part::Timestamp) && timestamp_header.is_none() {
            return Err(ConfigError::InvalidTemplate("{timestamp} needs a timestamp header"));
        }
        if template.uses(Part::Id) && id_header.is_none() {
            return Err(ConfigError::InvalidTemplate("{id} needs an id header"));
        }
        // A header the signature does not cover could be changed by anyone.
        for (header, part) in [(&timestamp_header, Part::Timestamp), (&id_header, Part::Id)] {
            if let Some(name) = header
                && !template.uses(part)
            {
                return Err(ConfigError::UnsignedHeader(name.as_str().to_owned()));
            }
        }
        if self
            .prefix
            .bytes()
            .any(|b| b == b' ' || b == b',' || !b.is_ascii_graphic())
        {
            return Err(ConfigError::InvalidPrefix);
        }
        let id_separators = template.id_separators()?;
        Ok(CompiledGeneric {
            signature_header,
            timestamp_header,
            id_header,
            template,
            encoding: self.encoding,
            prefix: self.prefix.clone(),
            id_separators,
        })
    }
}

/// A generic scheme with its header names and template checked.
#[derive(Debug, Clone)]
pub(crate) struct CompiledGeneric {
    pub(crate) signature_header: HeaderName,
    pub(crate) timestamp_header: Option<HeaderName>,
    pub(crate) id_header: Option<HeaderName>,
    pub(crate) template: Template,
    pub(crate) encoding: Encoding,
    pub(crate) prefix: String,
    /// The bytes that mark where an id ends in the template, which an id may
    /// not contain (see [`Template::id_separators`]).
    pub(crate) id_separators: Box<[u8]>,
}

/// The most parts a template may have: a bound on the pieces each message's
/// signed content is fed in.
const MAX_TEMPLATE_PARTS: usize = 15;

/// One piece of a signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Literal(Box<[u8]>),
    Id,
    Timestamp,
    Body,
}

/// A parsed signed-content template: exactly one `{body}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) parts: Vec<Part>,
}

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                literal.push(b'{');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("}}") {
                literal.push(b'}');
                rest = after;
            } else if c == '{' {
                let end = rest.find('}').ok_or(ConfigError::InvalidTemplate("unclosed `{`"))?;
                let part = match &rest[1..end] {
                    "id" => Part::Id,
                    "timestamp" => Part::Timestamp,
                    "body" => Part::Body,
                    _ => {
                        return Err(ConfigError::InvalidTemplate(
                            "unknown placeholder; use {id}, {timestamp} or {body}",
                        ));
                    }
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal).into_boxed_slice()));
                }
                parts.push(part);
                rest = &rest[end + 1..];
            } else if c == '}' {
                return Err(ConfigError::InvalidTemplate("unmatched `}`"));
            } else {
                let mut buf = [0; 4];
                literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into_boxed_slice()));
        }
        if parts.iter().filter(|p| **p == Part::Body).count() != 1 {
            return Err(ConfigError::InvalidTemplate("the template needs exactly one {body}"));
        }
        if parts.len() > MAX_TEMPLATE_PARTS {
            return Err(ConfigError::InvalidTemplate("the template has too many parts"));
        }
        Ok(Self { parts })
    }

    pub(crate) fn uses(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }

    /// The bytes a message id may not contain: for each `{id}`, the byte
    /// of the text between it and `{body}` that touches it (the first byte of
    /// the text after an `{id}` before the body, the last byte of the text
    /// before one after it). Read from the end away from the body, the
    /// content fixes where such an id starts; with that byte not in the id,
    /// the byte's first occurrence marks where it ends. Were the byte allowed,
    /// one signed content would split into another id and another body
    /// (`{id}.{body}`: id `7`, body `a.b` against id `7.a`, body `b`), both
    /// verifying. An `{id}` touching another placeholder, with no text
    /// between, is refused.
    pub(crate) fn id_separators(&self) -> Result<Box<[u8]>, ConfigError> {
        let body_at = self.parts.iter().position(|p| *p == Part::Body);
        let mut separators = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            if *part != Part::Id {
                continue;
            }
            for neighbour in [i.checked_sub(1), Some(i + 1)].into_iter().flatten() {
                let towards_body = body_at.is_some_and(|b| (neighbour > i) == (b > i));
                match self.parts.get(neighbour) {
                    Some(Part::Literal(text)) if towards_body => {
                        let touching = if neighbour > i { text.first() } else { text.last() };
                        separators.extend(touching);
                    }
                    Some(Part::Literal(_)) | None => {}
                    Some(_) => {
                        return Err(ConfigError::InvalidTemplate(
                            "{id} needs text between it and another placeholder",
                        ));
                    }
                }
            }
        }
        separators.sort_unstable();
        separators.dedup();
        Ok(separators.into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_placeholders_literals_and_escapes() {
        let t = Template::parse("v0:{timestamp}:{{{body}}}").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Literal(b"v0:".to_vec().into()),
                Part::Timestamp,
                Part::Literal(b":{".to_vec().into()),
                Part::Body,
                Part::Literal(b"}".to_vec().into()),
            ]
        );
        for bad in [
            "",
            "{id}",
            "{body}{body}",
            "{bod}",
            "{body",
            "}{body}",
            "{timestamp}.{body}.{unknown}",
        ] {
            assert!(
                matches!(Template::parse(bad), Err(ConfigError::InvalidTemplate(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn generic_schemes_validate_headers_and_placeholders() {
        assert!(
            GenericScheme::new("x-sig")
                .template("{timestamp}.{body}")
                .compile()
                .is_err()
        );
        assert!(GenericScheme::new("x-sig").template("{id}.{body}").compile().is_err());
        assert_eq!(
            GenericScheme::new("x-sig")
                .id_header("x-id")
                .template("{id}{body}")
                .compile()
                .unwrap_err(),
            ConfigError::InvalidTemplate("{id} needs text between it and another placeholder")
        );
        let id_then_body = GenericScheme::new("x-sig")
            .id_header("x-id")
            .template("v1:{id}.{body}")
            .compile();
        assert_eq!(&*id_then_body.unwrap().id_separators, b".");
        let body_then_ids = GenericScheme::new("x-sig")
            .id_header("x-id")
            .template("{id}:{body}|{id}.v1")
            .compile();
        assert_eq!(&*body_then_ids.unwrap().id_separators, b":|");
        assert!(GenericScheme::new("bad header").compile().is_err());
        assert!(GenericScheme::new("x-sig").prefix("a b").compile().is_err());
        assert_eq!(
            GenericScheme::new("x-sig").id_header("X-Id").compile().unwrap_err(),
            ConfigError::UnsignedHeader("x-id".to_owned())
        );
        assert_eq!(
            GenericScheme::new("x-sig")
                .timestamp_header("x-ts")
                .id_header("x-id")
                .template("{id}.{body}")
                .compile()
                .unwrap_err(),
            ConfigError::UnsignedHeader("x-ts".to_owned())
        );
        let ok = GenericScheme::new("X-Sig")
            .timestamp_header("x-ts")
            .template("{timestamp}.{body}")
            .compile()
            .unwrap();
        assert_eq!(ok.signature_header, "x-sig");
    }
}
