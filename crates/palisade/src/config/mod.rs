//! Declarative configuration: every layer's settings for named instances,
//! from TOML, YAML or environment variables, the way resilience4j configures
//! `resilience4j.circuitbreaker.instances.payments.*`.
//!
//! A file holds one table per layer type, and in it one table per named
//! instance. The instance `default` applies to every instance of that type:
//! an instance takes each setting from its own table, else from `default`,
//! else the layer's own default (the crate docs list them). A table-valued
//! setting (`window`, `backoff`) is taken whole, and of two alternatives
//! (a `hedge`'s `delay` and `percentile`) an instance that sets one takes
//! neither from `default`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use palisade::config::Settings;
//!
//! let file = r#"
//! [circuit_breaker.default]
//! failure_rate = 50
//! open_duration = "30s"
//!
//! [circuit_breaker.payments]
//! failure_rate = 25            # overrides the default block
//! window = { count = 50 }
//!
//! [bulkhead.payments]
//! max_concurrent = 16
//! max_wait = "250ms"
//!
//! [retry.payments]
//! max_attempts = 4
//! backoff = { kind = "exponential", base = "100ms", multiplier = 2.0, max = "2s" }
//! jitter = "full"
//! budget = { ratio = 0.2, min_per_sec = 10, window = "10s" }
//!
//! [idempotency.orders]
//! lock_expiry = "30s"
//! retention = "24h"
//!
//! [deadline.api]
//! timeout = "2s"
//!
//! [hedge.search]
//! percentile = { percentile = 0.95, samples = 1000, min_samples = 100 }
//!
//! [webhook.default]
//! tolerance = "5m"
//!
//! [webhook.payments]
//! scheme = "stripe"
//! secrets_env = ["STRIPE_WEBHOOK_SECRET"]   # read when loading
//! max_body = 65536
//!
//! [outbox_relay.orders]
//! batch_size = 50
//! backoff = { initial = "500ms", max = "5m", multiplier = 2.0 }
//! retention = "24h"
//! "#;
//! # let dir = std::env::temp_dir().join(format!("palisade-doc-file-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("palisade.toml");
//! # std::fs::write(&path, file)?;
//! # let vars = [("STRIPE_WEBHOOK_SECRET".to_owned(), "whsec_doc".to_owned())];
//! let settings = Settings::load_with_vars(Some(&path), "PALISADE", vars)?; // or `Settings::load`
//! // Rates judged from 50 calls: an unset `minimum_calls` is capped at the window's size.
//! let payments = settings.circuit_breaker("payments").build()?;
//! # std::fs::remove_dir_all(&dir)?;
//! # settings.webhook("payments")?.build()?;
//! # let _ = payments;
//! # Ok(())
//! # }
//! ```
//!
//! The layer types are `circuit_breaker`, `bulkhead`, `retry` (for
//! [`Settings::retry`] and [`Settings::http_retry`]), `idempotency`,
//! `deadline` (the server's), `hedge`, `webhook` (the verify layer) and
//! `outbox_relay`, each when its feature is on (`outbox` for the relay).
//! Fallbacks, adaptive bulkhead limits and webhook signers are set in code.
//!
//! Durations are written as people write them (`"250ms"`, `"30s"`, `"5m"`,
//! `"24h"`, `"1h 30m"`); sizes are bytes. A setting that can be switched off
//! takes `"off"` (`failure_rate = "off"`, `budget = "off"`).
//!
//! [`Settings::load`] reads a file (by its extension: `.toml`, `.yaml`,
//! `.yml`), then environment variables over it: with the prefix `PALISADE`,
//! `PALISADE__CIRCUIT_BREAKER__PAYMENTS__FAILURE_RATE=30` sets
//! `circuit_breaker.payments.failure_rate`. Variables are read lowercased and
//! split at `__`, so instance names are lowercase ASCII letters, digits and
//! `-` in words joined by single underscores (`orders_api`, `orders-api`; a
//! `-` is set by `env` or a container runtime, not by a POSIX shell's
//! `export`); a name a variable could not address (`ordersAPI`,
//! `orders__api`) is refused, rather than a variable meant for it making
//! another instance. Loading checks everything at
//! once, so a mistake stops the service at startup, not at the first
//! request: unknown keys are refused, and every instance is built once
//! (its metrics sent nowhere: loading publishes none). An
//! error names the exact key and the rule:
//!
//! ```text
//! circuit_breaker.payments.failure_rate: failure_rate must be within (0, 100] percent, got 150
//! ```
//!
//! The accessors ([`Settings::circuit_breaker`], ...) return the layer's
//! builder with the settings applied, so what a file cannot hold (a
//! classifier, a store) is added in code before `build()`:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use palisade::config::Settings;
//!
//! let settings = Settings::from_toml(r#"
//!     [circuit_breaker.default]
//!     open_duration = "30s"
//!     [circuit_breaker.payments]
//!     failure_rate = 25
//! "#)?;
//! let breaker = settings.circuit_breaker("payments").build()?;
//! let inventory = settings.circuit_breaker("inventory").build()?; // the default block alone
//! # let _ = (breaker, inventory);
//! # Ok(())
//! # }
//! ```
//!
//! # Webhooks
//!
//! A `webhook` instance names its sender's `scheme` (`"standard_webhooks"`,
//! `"stripe"`, `"github"`, `"slack"`, `"shopify"`, or a generic HMAC scheme
//! as a table: `scheme = { generic = { signature_header = "X-Acme-Signature",
//! timestamp_header = "X-Acme-Timestamp", id_header = "X-Acme-Id", template =
//! "{id}.{timestamp}.{body}", encoding = "base64", prefix = "v1=" } }`) and
//! its keys:
//!
//! - `secrets_env`, the names of environment variables holding secrets,
//!   read when loading (from the variables given to
//!   [`Settings::load_with_vars`], else the process's). Secrets belong in the
//!   environment or a secret store, not in a file that is shared or committed.
//! - `secrets`, the secrets themselves, for files kept as secret as the
//!   secrets. A file that does not parse is reported with the line at
//!   fault, which can hold one of them.
//! - `public_keys`, Standard Webhooks' `whpk_` keys for `v1a` signatures.
//!
//! While rotating, give the old and the new secret: the verifier tries
//! `secrets` in order, then `secrets_env`. The `default` block holds what
//! instances share (`tolerance`, `max_body`, `replay_window`, `lock_expiry`,
//! `store_timeout`, even `scheme`) and no keys, so [`Settings::webhook`] only
//! builds instances the settings name. Secrets never show: `Debug` counts
//! them, and errors name the key (`webhook.payments.secrets_env: a secret is
//! not valid base64`), never the value.
//!
//! The replay store is set in code on the returned builder; a clock other
//! than the system's is given to [`Settings::webhook_with_clock`], since it
//! belongs to the verifier the builder already holds.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use palisade::config::Settings;
//! use palisade::webhook::MemoryReplayStore;
//!
//! let file = r#"
//!     [webhook.github]
//!     scheme = "github"
//!     secrets_env = ["GITHUB_WEBHOOK_SECRET"]
//!     replay_window = "24h"
//! "#;
//! # let dir = std::env::temp_dir().join(format!("palisade-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("palisade.toml");
//! # std::fs::write(&path, file)?;
//! // In a service: `Settings::load(Some(path), "PALISADE")?`, the secret in its environment.
//! let vars = [("GITHUB_WEBHOOK_SECRET".to_owned(), "It's a Secret to Everybody".to_owned())];
//! let settings = Settings::load_with_vars(Some(&path), "PALISADE", vars)?;
//! let verify = settings
//!     .webhook("github")?
//!     .replay_store(MemoryReplayStore::new())
//!     .build()?;
//! # std::fs::remove_dir_all(&dir)?;
//! # let _ = verify;
//! # Ok(())
//! # }
//! ```
//!
//! # Outbox relays
//!
//! An `outbox_relay` instance takes the relay builder's settings:
//! `batch_size`, `workers`, `concurrency`, `poll_interval`, `max_attempts`,
//! `backoff` (`initial`, `max` and `multiplier`, all three), `publish_timeout`,
//! `lease`, `store_timeout`, `retention` (`"0s"`, the default, deletes events
//! on publish), `cleanup_interval`, `backlog_interval`. They are checked when
//! loading, without a store or publisher; [`Settings::outbox_relay`] takes
//! both and returns the builder, to add the wake-up signal before `build()`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

#[cfg(feature = "bulkhead")]
mod bulkhead;
#[cfg(feature = "circuit-breaker")]
mod circuit_breaker;
#[cfg(feature = "deadline")]
mod deadline;
#[cfg(feature = "hedge")]
mod hedge;
#[cfg(feature = "idempotency")]
mod idempotency;
#[cfg(feature = "outbox")]
mod outbox_relay;
#[cfg(feature = "retry")]
mod retry;
#[cfg(any(
    feature = "circuit-breaker",
    feature = "retry",
    feature = "idempotency",
    feature = "deadline"
))]
mod values;
#[cfg(feature = "webhook")]
mod webhook;

#[cfg(feature = "bulkhead")]
pub use bulkhead::BulkheadSettings;
#[cfg(feature = "circuit-breaker")]
pub use circuit_breaker::{CircuitBreakerSettings, WindowSettings};
#[cfg(feature = "deadline")]
pub use deadline::DeadlineSettings;
#[cfg(feature = "hedge")]
pub use hedge::{HedgeSettings, PercentileSettings};
#[cfg(feature = "idempotency")]
pub use idempotency::IdempotencySettings;
#[cfg(feature = "outbox")]
pub use outbox_relay::{OutboxRelaySettings, RelayBackoffSettings};
#[cfg(feature = "retry")]
pub use retry::{BackoffSettings, BudgetSettings, JitterSettings, RetrySettings};
#[cfg(feature = "webhook")]
pub use webhook::{EncodingSettings, GenericSchemeSettings, SchemeSettings, Secrets, WebhookSettings};

/// The name of the instance whose settings every other instance of its layer
/// type starts from.
pub const DEFAULT_INSTANCE: &str = "default";

/// What was wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            key: key.into(),
            message: message.to_string(),
        }
    }

    /// The dotted path of the key at fault (`circuit_breaker.payments.failure_rate`),
    /// or of the table holding it; empty when the file itself could not be read.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The rule that was broken.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The settings of one layer type: its `default` block and its named instances,
/// each already merged over the default block and checked.
#[derive(Debug, Clone)]
struct Section<T> {
    default: T,
    instances: BTreeMap<String, T>,
}

impl<T: Clone> Section<T> {
    fn get(&self, name: &str) -> &T {
        self.instances.get(name).unwrap_or(&self.default)
    }
}

impl<T: Default> Default for Section<T> {
    fn default() -> Self {
        Self {
            default: T::default(),
            instances: BTreeMap::new(),
        }
    }
}

/// A broken rule found in an instance's settings: the key within the
/// instance (if one is at fault) and the rule.
type KeyError = (Option<&'static str>, String);

/// The environment variables settings may name (`secrets_env`): those given
/// to [`Settings::load_with_vars`], else the process's.
type Environment<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// A layer type's settings as the configuration holds them: how they are
/// read, and how they are checked by building the layer once.
trait LayerSettings: DeserializeOwned + Default + Clone {
    /// The table's name in the configuration (`circuit_breaker`).
    const SECTION: &'static str;

    /// Groups of keys that are alternatives (the hedge's `delay` and
    /// `percentile`): an instance that sets one key of a group takes none of
    /// the group from the default block.
    const ALTERNATIVES: &'static [&'static [&'static str]] = &[];

    /// Reads what the settings name in the environment, before the check.
    fn read_environment(&mut self, _env: &Environment<'_>) -> Result<(), KeyError> {
        Ok(())
    }

    /// Builds the layer named `name` once, so an impossible combination is
    /// found at load time; the error is `(key within the instance, rule)`.
    fn check(&self, name: &str) -> Result<(), KeyError>;
}

/// Every layer's settings, by layer type and instance name.
///
/// Made by [`Settings::load`], [`Settings::from_toml`] or
/// [`Settings::from_yaml`]; see the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    #[cfg(feature = "circuit-breaker")]
    circuit_breaker: Section<CircuitBreakerSettings>,
    #[cfg(feature = "bulkhead")]
    bulkhead: Section<BulkheadSettings>,
    #[cfg(feature = "retry")]
    retry: Section<RetrySettings>,
    #[cfg(feature = "idempotency")]
    idempotency: Section<IdempotencySettings>,
    #[cfg(feature = "deadline")]
    deadline: Section<DeadlineSettings>,
    #[cfg(feature = "hedge")]
    hedge: Section<HedgeSettings>,
    #[cfg(feature = "webhook")]
    webhook: Section<WebhookSettings>,
    #[cfg(feature = "outbox")]
    outbox_relay: Section<OutboxRelaySettings>,
}

impl Settings {
    /// Reads `file` (TOML for `.toml`, YAML for `.yaml` and `.yml`), then the
    /// environment variables that start with `env_prefix` and `__` over it,
    /// with `__` between the parts of a key. `file` may be absent (`None`):
    /// the environment alone is read.
    ///
    /// # Errors
    ///
    /// An unreadable file or an unknown extension, a value of the wrong type,
    /// an unknown key or layer type, a setting the layer refuses; the error
    /// names the key.
    pub fn load(file: Option<&Path>, env_prefix: &str) -> Result<Self, ConfigError> {
        Self::load_with_vars(file, env_prefix, std::env::vars())
    }

    /// As [`load`](Self::load), with the environment variables given as
    /// name-value pairs instead of read from the process (a parsed `.env`
    /// file, a test's own).
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn load_with_vars(
        file: Option<&Path>,
        env_prefix: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut sources = ::config::Config::builder();
        if let Some(path) = file {
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => ::config::FileFormat::Toml,
                Some("yaml" | "yml") => ::config::FileFormat::Yaml,
                _ => {
                    return Err(ConfigError::new(
                        "",
                        format!("{}: the file must end in .toml, .yaml or .yml", path.display()),
                    ));
                }
            };
            sources = sources.add_source(::config::File::from(path).format(format));
        }
        let vars: ::config::Map<String, String> = vars.into_iter().collect();
        let sources = sources.add_source(
            ::config::Environment::with_prefix(env_prefix)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(vars.clone())),
        );
        Self::from_sources(sources, &|name| vars.get(name).cloned())
    }

    /// Reads settings from TOML text; the environment variables it names
    /// (`secrets_env`) are the process's.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_sources(
            ::config::Config::builder().add_source(::config::File::from_str(text, ::config::FileFormat::Toml)),
            &|name| std::env::var(name).ok(),
        )
    }

    /// Reads settings from YAML text; the environment variables it names
    /// (`secrets_env`) are the process's.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::from_sources(
            ::config::Config::builder().add_source(::config::File::from_str(text, ::config::FileFormat::Yaml)),
            &|name| std::env::var(name).ok(),
        )
    }

    fn from_sources(
        sources: ::config::builder::ConfigBuilder<::config::builder::DefaultState>,
        env: &Environment<'_>,
    ) -> Result<Self, ConfigError> {
        let tree: Value = sources
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::new("", e))?;
        let Value::Object(mut tree) = tree else {
            return Err(ConfigError::new("", "the configuration must be a table of layer types"));
        };
        let settings = Self {
            #[cfg(feature = "circuit-breaker")]
            circuit_breaker: section(&mut tree, env)?,
            #[cfg(feature = "bulkhead")]
            bulkhead: section(&mut tree, env)?,
            #[cfg(feature = "retry")]
            retry: section(&mut tree, env)?,
            #[cfg(feature = "idempotency")]
            idempotency: section(&mut tree, env)?,
            #[cfg(feature = "deadline")]
            deadline: section(&mut tree, env)?,
            #[cfg(feature = "hedge")]
            hedge: section(&mut tree, env)?,
            #[cfg(feature = "webhook")]
            webhook: section(&mut tree, env)?,
            #[cfg(feature = "outbox")]
            outbox_relay: section(&mut tree, env)?,
        };
        if let Some(unknown) = tree.keys().next() {
            return Err(ConfigError::new(
                unknown.as_str(),
                format!("unknown layer type; expected one of: {}", KNOWN_SECTIONS.join(", ")),
            ));
        }
        Ok(settings)
    }

    /// The circuit breaker named `name`: its builder with the settings applied.
    #[cfg(feature = "circuit-breaker")]
    pub fn circuit_breaker(&self, name: &str) -> palisade_circuit_breaker::CircuitBreakerBuilder {
        self.circuit_breaker.get(name).apply(name)
    }

    /// The bulkhead named `name`: its builder with the settings applied.
    #[cfg(feature = "bulkhead")]
    pub fn bulkhead(&self, name: &str) -> palisade_bulkhead::BulkheadBuilder {
        self.bulkhead.get(name).apply(name)
    }

    /// The retry layer named `name` for any cloneable request.
    ///
    /// # Errors
    ///
    /// The instance sets a key that only HTTP retries have
    /// (`retry_methods`, `retry_status`, ...): use [`http_retry`](Self::http_retry).
    #[cfg(feature = "retry")]
    pub fn retry(
        &self,
        name: &str,
    ) -> Result<palisade_retry::RetryBuilder<palisade_core::ErrorClassifier, palisade_retry::AnyRequest>, ConfigError>
    {
        let settings = self.retry.get(name);
        match settings.http_only_key() {
            Some(key) => Err(ConfigError::new(
                format!("retry.{name}.{key}"),
                "only HTTP retries have this setting; build this instance with `http_retry`",
            )),
            None => Ok(settings.apply_common(palisade_retry::RetryLayer::builder(name))),
        }
    }

    /// The retry layer named `name` for `http::Request`s.
    #[cfg(feature = "retry")]
    pub fn http_retry(
        &self,
        name: &str,
    ) -> palisade_retry::RetryBuilder<palisade_core::HttpClassifier, palisade_retry::HttpRequest> {
        self.retry.get(name).apply_http(name)
    }

    /// The Idempotency-Key layer named `name`: its builder with the settings
    /// applied and a memory store (set the store in code).
    #[cfg(feature = "idempotency")]
    pub fn idempotency(&self, name: &str) -> palisade_idempotency::IdempotencyBuilder {
        self.idempotency.get(name).apply(name)
    }

    /// The server deadline layer named `name`: its builder with the settings applied.
    #[cfg(feature = "deadline")]
    pub fn deadline(&self, name: &str) -> palisade_deadline::DeadlineBuilder {
        self.deadline.get(name).apply(name)
    }

    /// The hedging layer named `name`: its builder with the settings applied
    /// (the methods, the key header and a predicate are set in code).
    #[cfg(feature = "hedge")]
    pub fn hedge(&self, name: &str) -> palisade_hedge::HedgeBuilder {
        self.hedge.get(name).apply(name)
    }

    /// The webhook verify layer named `name`: its builder around a verifier
    /// with the scheme, keys and tolerance, and the layer's settings applied
    /// (the replay store is set in code). Timestamps are checked against the
    /// system clock; [`webhook_with_clock`](Self::webhook_with_clock) takes
    /// another.
    ///
    /// # Errors
    ///
    /// The settings have no instance `name`: unlike other layers', a
    /// verifier cannot start from the default block alone, which holds no
    /// scheme or keys.
    #[cfg(feature = "webhook")]
    pub fn webhook(&self, name: &str) -> Result<palisade_webhook::VerifyBuilder, ConfigError> {
        self.webhook_with_clock(name, palisade_webhook::SystemClock)
    }

    /// As [`webhook`](Self::webhook), with the verifier checking timestamps
    /// against `clock` (the clock belongs to the verifier, which the layer's
    /// builder already holds, so it is given here).
    ///
    /// # Errors
    ///
    /// As [`webhook`](Self::webhook).
    #[cfg(feature = "webhook")]
    pub fn webhook_with_clock(
        &self,
        name: &str,
        clock: impl palisade_webhook::Clock,
    ) -> Result<palisade_webhook::VerifyBuilder, ConfigError> {
        if !self.webhook.instances.contains_key(name) {
            return Err(ConfigError::new(
                format!("{}.{name}", WebhookSettings::SECTION),
                "no such instance in the settings; a verifier needs its own scheme and keys",
            ));
        }
        let settings = self.webhook.get(name);
        // Checked when loading, with the system clock: the clock plays no part in the rules.
        let verifier = settings
            .build_verifier(clock)
            .map_err(|error| at_key(WebhookSettings::SECTION, name, error))?;
        Ok(settings.layer(name, verifier))
    }

    /// The outbox relay named `name` over `store` and `publisher`: its
    /// builder with the settings applied (the wake-up signal and an event
    /// hook are set in code). An instance the settings do not name takes the
    /// default block.
    #[cfg(feature = "outbox")]
    pub fn outbox_relay<S, P>(&self, name: &str, store: S, publisher: P) -> palisade_outbox::RelayBuilder<S, P> {
        self.outbox_relay.get(name).apply(name, store, publisher)
    }
}

/// The layer types this build knows (its features).
const KNOWN_SECTIONS: &[&str] = &[
    #[cfg(feature = "circuit-breaker")]
    "circuit_breaker",
    #[cfg(feature = "bulkhead")]
    "bulkhead",
    #[cfg(feature = "retry")]
    "retry",
    #[cfg(feature = "idempotency")]
    "idempotency",
    #[cfg(feature = "deadline")]
    "deadline",
    #[cfg(feature = "hedge")]
    "hedge",
    #[cfg(feature = "webhook")]
    "webhook",
    #[cfg(feature = "outbox")]
    "outbox_relay",
];

/// Takes `T::SECTION` out of `tree`, merges each instance over the default
/// block, reads it as `T` and builds it once.
fn section<T: LayerSettings>(tree: &mut Map<String, Value>, env: &Environment<'_>) -> Result<Section<T>, ConfigError> {
    let Some(table) = tree.remove(T::SECTION) else {
        return Ok(Section::default());
    };
    let Value::Object(mut instances) = table else {
        return Err(ConfigError::new(T::SECTION, "must be a table of named instances"));
    };
    let default_table = match instances.remove(DEFAULT_INSTANCE) {
        None => Map::new(),
        Some(Value::Object(table)) => table,
        Some(_) => {
            return Err(ConfigError::new(
                format!("{}.{DEFAULT_INSTANCE}", T::SECTION),
                "must be a table of settings",
            ));
        }
    };
    let default = read::<T>(DEFAULT_INSTANCE, Value::Object(default_table.clone()), env)?;
    let mut read_instances = BTreeMap::new();
    for (name, table) in instances {
        if !addressable(&name) {
            return Err(ConfigError::new(
                format!("{}.{name}", T::SECTION),
                "an instance name must be lowercase ASCII letters, digits and `-`, in words joined by \
                 single underscores, for environment variables to address it",
            ));
        }
        let Value::Object(table) = table else {
            return Err(ConfigError::new(
                format!("{}.{name}", T::SECTION),
                "must be a table of settings",
            ));
        };
        let mut merged = default_table.clone();
        for group in T::ALTERNATIVES {
            if group.iter().any(|key| table.contains_key(*key)) {
                merged.retain(|key, _| !group.contains(&key.as_str()));
            }
        }
        merged.extend(table);
        let settings = read::<T>(&name, Value::Object(merged), env)?;
        read_instances.insert(name, settings);
    }
    Ok(Section {
        default,
        instances: read_instances,
    })
}

/// Whether environment variables can address the instance `name`: they are
/// read lowercased and split at `__`, so a name with a capital or a
/// doubled, leading or trailing `_` would become another name, or none.
fn addressable(name: &str) -> bool {
    name.split('_').all(|word| {
        !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

fn read<T: LayerSettings>(name: &str, table: Value, env: &Environment<'_>) -> Result<T, ConfigError> {
    let mut settings: T = serde_path_to_error::deserialize(table).map_err(|e| {
        let mut key = format!("{}.{name}", T::SECTION);
        let path = e.path().to_string();
        if path != "." {
            key = format!("{key}.{path}");
        }
        let message = e.into_inner().to_string();
        // Inside a tagged table (`backoff`) serde reports an unknown key at the
        // table: name the key itself.
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
            && !key.ends_with(&format!(".{unknown}"))
        {
            key = format!("{key}.{unknown}");
        }
        ConfigError::new(key, message)
    })?;
    // Checking builds the instance once; what that build registers must not
    // reach the application's metrics (a breaker named `default`, a live
    // breaker's state gauge reset to closed by a reload): it goes nowhere.
    settings
        .read_environment(env)
        .and_then(|()| metrics::with_local_recorder(&metrics::NoopRecorder, || settings.check(name)))
        .map_err(|error| at_key(T::SECTION, name, error))?;
    Ok(settings)
}

/// The error naming the key at fault in `section.name`.
fn at_key(section: &str, name: &str, (key, rule): KeyError) -> ConfigError {
    let key = match key {
        Some(key) => format!("{section}.{name}.{key}"),
        None => format!("{section}.{name}"),
    };
    ConfigError::new(key, rule)
}
