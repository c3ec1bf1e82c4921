//! Declarative configuration: files, the environment, defaults per layer
//! type, and errors that name the key.
#![cfg(all(feature = "config", feature = "full"))]

use palisade::config::{ConfigError, Settings};
use palisade::webhook::{FixedClock, Reason, Scheme, Signer};

fn error(result: Result<Settings, ConfigError>) -> String {
    result.expect_err("the configuration must be refused").to_string()
}

/// Loads `toml` as a file, with `vars` as the environment.
fn load(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("palisade-config-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("palisade.toml");
    std::fs::write(&path, toml).unwrap();
    let vars = vars.iter().map(|(name, value)| (name.to_string(), value.to_string()));
    let settings = Settings::load_with_vars(Some(&path), "PALISADE", vars);
    std::fs::remove_dir_all(&dir).unwrap();
    settings
}

#[test]
fn an_instance_takes_its_own_keys_then_the_default_block_then_the_layers_defaults() {
    let settings = Settings::from_toml(
        r#"
        [circuit_breaker.default]
        failure_rate = 40
        open_duration = "30s"
        minimum_calls = 10

        [circuit_breaker.payments]
        failure_rate = 25
        window = { count = 20 }
        "#,
    )
    .unwrap();
    let payments = format!("{:?}", settings.circuit_breaker("payments"));
    assert!(payments.contains("failure_rate: Some(25.0)"), "{payments}");
    assert!(payments.contains("window: Count(20)"), "{payments}");
    assert!(payments.contains("minimum_calls: Some(10)"), "{payments}");
    assert!(payments.contains("open: Fixed(30s)"), "{payments}");
    // An instance the file does not name gets the default block.
    let inventory = format!("{:?}", settings.circuit_breaker("inventory"));
    assert!(inventory.contains("failure_rate: Some(40.0)"), "{inventory}");
    assert!(inventory.contains("window: Count(100)"), "{inventory}");
    assert!(inventory.contains("name: \"inventory\""), "{inventory}");
    settings.circuit_breaker("payments").build().unwrap();
}

#[test]
fn durations_are_written_as_people_write_them() {
    let settings = Settings::from_toml(
        r#"
        [bulkhead.reports]
        max_concurrent = 4
        max_queued = 8
        max_wait = "250ms"
        retry_after = "1m 30s"
        "#,
    )
    .unwrap();
    let reports = format!("{:?}", settings.bulkhead("reports"));
    assert!(reports.contains("max_wait: Some(250ms)"), "{reports}");
    assert!(reports.contains("retry_after: 90s"), "{reports}");
    assert!(reports.contains("limit: Fixed(4)"), "{reports}");
    assert_eq!(
        error(Settings::from_toml("[bulkhead.reports]\nmax_wait = \"soon\"")),
        "bulkhead.reports.max_wait: invalid value: string \"soon\", expected a duration"
    );
}

#[test]
fn unknown_keys_and_layer_types_are_refused_by_name() {
    assert_eq!(
        error(Settings::from_toml("[circuit_breaker.payments]\nfailur_rate = 30")),
        "circuit_breaker.payments.failur_rate: unknown field `failur_rate`, expected one of `failure_rate`, \
         `slow_call_rate`, `slow_call_duration`, `consecutive_failures`, `window`, `minimum_calls`, \
         `open_duration`, `open_duration_max`, `permitted_calls_in_half_open`, `max_half_open_duration`, \
         `max_keys`, `key_idle_timeout`"
    );
    assert_eq!(
        error(Settings::from_toml("[circuit_breakers.payments]\nfailure_rate = 30")),
        "circuit_breakers: unknown layer type; expected one of: circuit_breaker, bulkhead, retry, idempotency, \
         deadline, hedge, webhook, outbox_relay"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[retry.payments]\nbackoff = { kind = \"exponential\", base = \"1s\", multiplier = 2.0, max = \"8s\", steps = 3 }"
        )),
        "retry.payments.backoff.steps: unknown field `steps`, expected one of `base`, `multiplier`, `max`"
    );
}

#[test]
fn rules_the_layers_enforce_are_reported_at_the_key() {
    assert_eq!(
        error(Settings::from_toml("[circuit_breaker.payments]\nfailure_rate = 150")),
        "circuit_breaker.payments.failure_rate: failure_rate must be within (0, 100] percent, got 150"
    );
    assert_eq!(
        error(Settings::from_toml("[circuit_breaker.default]\nminimum_calls = 0")),
        "circuit_breaker.default.minimum_calls: minimum_calls must be at least 1"
    );
    // A rule broken by the default block is reported for the default block,
    // and again for an instance that inherits it.
    assert_eq!(
        error(Settings::from_toml(
            "[bulkhead.default]\nmax_concurrent = 0\n[bulkhead.reports]\nmax_queued = 1"
        )),
        "bulkhead.default.max_concurrent: max_concurrent must be between 1 and 2147483647, got 0"
    );
    assert_eq!(
        error(Settings::from_toml("[retry.payments]\nmax_attempts = 0")),
        "retry.payments.max_attempts: max_attempts must be at least 1 (it counts the first attempt)"
    );
    assert_eq!(
        error(Settings::from_toml("[retry.payments]\nbudget = { ratio = -1.0 }")),
        "retry.payments.budget.ratio: retry budget ratio must be between 0 and 1000, got -1"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[retry.payments]\nretry_status = { \"6000\" = true }"
        )),
        "retry.payments.retry_status: \"6000\" is not an HTTP status code"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[idempotency.orders]\nlock_expiry = \"1h\"\nretention = \"10m\""
        )),
        "idempotency.orders.retention: the retention (600s) must be at least the lock expiry (3600s)"
    );
    assert_eq!(
        error(Settings::from_toml("[circuit_breaker.payments]\nslow_call_rate = 50")),
        "circuit_breaker.payments.slow_call_duration: must be set with slow_call_rate"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[circuit_breaker.payments]\nwindow = { count = 10, time = \"10s\" }"
        )),
        "circuit_breaker.payments.window: a count window takes neither time nor buckets"
    );
    assert_eq!(
        error(Settings::from_toml("[bulkhead.reports]\nmax_concurrent = \"many\"")),
        "bulkhead.reports.max_concurrent: invalid type: string \"many\", expected usize"
    );
}

#[test]
fn off_switches_a_rule_or_the_budget_off() {
    let settings = Settings::from_toml(
        r#"
        [circuit_breaker.payments]
        failure_rate = "off"
        consecutive_failures = 5

        [retry.payments]
        budget = "off"
        idempotency_key_header = "off"
        "#,
    )
    .unwrap();
    let payments = format!("{:?}", settings.circuit_breaker("payments"));
    assert!(payments.contains("failure_rate: None"), "{payments}");
    assert!(payments.contains("consecutive: Some(5)"), "{payments}");
    let retry = settings.http_retry("payments").build().unwrap();
    assert!(retry.budget().is_none());
    // A value that is neither "off" nor the setting's own says what was expected.
    assert_eq!(
        error(Settings::from_toml("[circuit_breaker.payments]\nfailure_rate = \"of\"")),
        "circuit_breaker.payments.failure_rate: \"of\" is not \"off\" (invalid type: string \"of\", expected f64)"
    );
    // From the environment too, as numbers or the word.
    let settings = load(
        "",
        &[
            ("PALISADE__CIRCUIT_BREAKER__PAYMENTS__FAILURE_RATE", "30"),
            ("PALISADE__CIRCUIT_BREAKER__PAYMENTS__CONSECUTIVE_FAILURES", "off"),
        ],
    )
    .unwrap();
    let payments = format!("{:?}", settings.circuit_breaker("payments"));
    assert!(payments.contains("failure_rate: Some(30.0)"), "{payments}");
    assert!(payments.contains("consecutive: None"), "{payments}");
    // Inside a table that may also be "off", a typo is named like any other.
    for layer in ["retry", "hedge"] {
        assert_eq!(
            error(Settings::from_toml(&format!("[{layer}.p]\nbudget = {{ ratoi = 0.2 }}"))),
            format!("{layer}.p.budget.ratoi: unknown field `ratoi`, expected one of `ratio`, `min_per_sec`, `window`")
        );
    }
}

#[test]
fn http_only_retry_keys_are_refused_for_a_plain_retry() {
    let settings = Settings::from_toml(
        r#"
        [retry.default]
        max_attempts = 4
        [retry.payments]
        retry_methods = ["GET", "POST"]
        "#,
    )
    .unwrap();
    assert_eq!(
        settings.retry("payments").unwrap_err().to_string(),
        "retry.payments.retry_methods: only HTTP retries have this setting; build this instance with `http_retry`"
    );
    settings.http_retry("payments").build().unwrap();
    settings.retry("inventory").unwrap().build().unwrap();
}

#[test]
fn yaml_reads_the_same_settings() {
    let settings = Settings::from_yaml(
        r#"
circuit_breaker:
  default:
    open_duration: 30s
  payments:
    failure_rate: 25
    window: { time: 60s, buckets: 6 }
retry:
  payments:
    max_attempts: 4
    backoff: { kind: exponential, base: 100ms, multiplier: 2.0, max: 2s }
    jitter: { shorten: 0.2 }
"#,
    )
    .unwrap();
    let payments = format!("{:?}", settings.circuit_breaker("payments"));
    assert!(
        payments.contains("window: Time { length: 60s, buckets: 6 }"),
        "{payments}"
    );
    assert!(payments.contains("open: Fixed(30s)"), "{payments}");
    let retry = format!("{:?}", settings.http_retry("payments"));
    assert!(retry.contains("max_attempts: 4"), "{retry}");
    assert!(retry.contains("jitter: Shorten(0.2)"), "{retry}");
    assert!(
        retry.contains("backoff: Backoff { kind: Exponential { base: 100ms, multiplier: 2.0, cap: 2s } }"),
        "{retry}"
    );
}

#[test]
fn a_file_and_then_the_environment_over_it() {
    let dir = std::env::temp_dir().join(format!("palisade-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("palisade.toml");
    std::fs::write(&file, "[bulkhead.reports]\nmax_concurrent = 4\nmax_queued = 2\n").unwrap();
    let vars = [
        ("PALISADE__BULKHEAD__REPORTS__MAX_CONCURRENT".to_owned(), "9".to_owned()),
        ("OTHER__BULKHEAD__REPORTS__MAX_QUEUED".to_owned(), "7".to_owned()),
    ];
    let settings = Settings::load_with_vars(Some(&file), "PALISADE", vars).unwrap();
    let reports = format!("{:?}", settings.bulkhead("reports"));
    assert!(reports.contains("limit: Fixed(9)"), "{reports}");
    assert!(reports.contains("max_queued: 2"), "{reports}");

    let json = dir.join("palisade.json");
    std::fs::write(&json, "{}").unwrap();
    assert!(
        Settings::load(Some(&json), "PALISADE")
            .unwrap_err()
            .to_string()
            .ends_with("palisade.json: the file must end in .toml, .yaml or .yml")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deadlines_and_hedging_are_configured_like_the_other_layers() {
    let settings = Settings::from_toml(
        r#"
        [deadline.api]
        timeout = "2s"
        header = "off"

        [hedge.default]
        max_attempts = 3
        [hedge.search]
        percentile = { percentile = 0.9, samples = 500, min_samples = 50 }
        budget = "off"
        "#,
    )
    .unwrap();
    let api = format!("{:?}", settings.deadline("api"));
    assert!(api.contains("timeout: Some(2s)"), "{api}");
    assert!(api.contains("header: None"), "{api}");
    settings.deadline("api").build().unwrap();
    let search = settings.hedge("search").build().unwrap();
    assert!(search.budget().is_none());
    assert_eq!(
        error(Settings::from_toml(
            "[deadline.api]\ntimeout = \"10m\"\nmax_timeout = \"1m\""
        )),
        "deadline.api.timeout: the timeout (600s) must not exceed max_timeout (60s)"
    );
    assert_eq!(
        error(Settings::from_toml("[hedge.search]\nmax_attempts = 1")),
        "hedge.search.max_attempts: max_attempts must be at least 2 (the original and one hedge), got 1"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[hedge.search]\ndelay = \"50ms\"\npercentile = { percentile = 0.9, samples = 10, min_samples = 1 }"
        )),
        "hedge.search.delay: set either delay or percentile"
    );
}

/// GitHub's published example: this secret signs "Hello, World!" with this signature.
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

fn github_request() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-hub-signature-256", GITHUB_SIGNATURE.parse().unwrap());
    headers
}

#[test]
fn a_webhook_instance_verifies_with_its_secrets_and_the_layer_takes_its_settings() {
    let settings = Settings::from_toml(&format!(
        r#"
        [webhook.default]
        tolerance = "10m"
        max_body = 65536

        [webhook.github]
        scheme = "github"
        secrets = ["the secret before rotation", "{GITHUB_SECRET}"]
        replay_window = "1h"
        lock_expiry = "2m"
        store_timeout = "500ms"

        [webhook.impostor]
        scheme = "github"
        secrets = ["not the sender's secret"]
        "#
    ))
    .unwrap();
    let github = settings.webhook("github").unwrap().build().unwrap();
    let shown = format!("{github:?}");
    assert!(shown.contains("name: \"github\""), "{shown}");
    assert!(shown.contains("secrets: 2"), "{shown}");
    assert!(shown.contains("tolerance_secs: 600"), "{shown}");
    assert!(shown.contains("max_body: 65536"), "{shown}");
    assert!(shown.contains("replay_window: 3600s"), "{shown}");
    assert!(shown.contains("lock_expiry: 120s"), "{shown}");
    assert!(shown.contains("store_timeout: 500ms"), "{shown}");
    // The second secret verifies the message.
    let verified = github.verifier().verify(&github_request(), b"Hello, World!").unwrap();
    assert_eq!(verified.key_index(), 1);
    assert_eq!(
        github
            .verifier()
            .verify(&github_request(), b"Hello, World?")
            .unwrap_err()
            .reason(),
        Reason::BadSignature
    );
    let impostor = settings.webhook("impostor").unwrap().build().unwrap();
    assert_eq!(
        impostor
            .verifier()
            .verify(&github_request(), b"Hello, World!")
            .unwrap_err()
            .reason(),
        Reason::BadSignature
    );
    // Secrets are counted, never shown.
    for shown in [
        format!("{settings:?}"),
        format!("{:?}", settings.webhook("github").unwrap()),
    ] {
        assert!(!shown.contains(GITHUB_SECRET), "{shown}");
        assert!(!shown.contains("before rotation"), "{shown}");
    }
    assert!(format!("{settings:?}").contains("secrets: Secrets(2 redacted)"));
    // A verifier needs its own scheme and keys: no instance, no verifier.
    assert_eq!(
        settings.webhook("shopify").unwrap_err().to_string(),
        "webhook.shopify: no such instance in the settings; a verifier needs its own scheme and keys"
    );
}

#[test]
fn webhook_secrets_come_from_the_environment_variables_the_settings_name() {
    let settings = load(
        r#"
        [webhook.stripe]
        scheme = "stripe"
        secrets_env = ["STRIPE_WEBHOOK_SECRET"]
        tolerance = "1m"
        "#,
        &[
            ("STRIPE_WEBHOOK_SECRET", "whsec_from_the_environment"),
            ("PALISADE__WEBHOOK__STRIPE__MAX_BODY", "2048"),
        ],
    )
    .unwrap();

    let signed_at = 1_700_000_000;
    let signer = Signer::builder(Scheme::Stripe)
        .secret("whsec_from_the_environment")
        .clock(FixedClock(signed_at))
        .build()
        .unwrap();
    let mut headers = http::HeaderMap::new();
    signer.sign(&mut headers, br#"{"id":"evt_1"}"#).unwrap();
    // Within the configured tolerance of one minute, by the given clock.
    let stripe = settings
        .webhook_with_clock("stripe", FixedClock(signed_at + 60))
        .unwrap()
        .build()
        .unwrap();
    assert!(format!("{stripe:?}").contains("max_body: 2048"));
    stripe.verifier().verify(&headers, br#"{"id":"evt_1"}"#).unwrap();
    let later = settings
        .webhook_with_clock("stripe", FixedClock(signed_at + 61))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        later
            .verifier()
            .verify(&headers, br#"{"id":"evt_1"}"#)
            .unwrap_err()
            .reason(),
        Reason::StaleTimestamp
    );
    assert!(!format!("{settings:?}").contains("from_the_environment"));

    assert_eq!(
        error(Settings::load_with_vars(
            None,
            "PALISADE",
            [("PALISADE__WEBHOOK__STRIPE__SCHEME".to_owned(), "stripe".to_owned())]
        )),
        "webhook.stripe.secrets: no secret or key configured"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.stripe]\nscheme = \"stripe\"\nsecrets_env = [\"PALISADE_TEST_NEVER_SET_SECRET\"]"
        )),
        "webhook.stripe.secrets_env: the environment variable PALISADE_TEST_NEVER_SET_SECRET is not set"
    );
    let refused = error(load(
        "[webhook.svix]\nscheme = \"standard_webhooks\"\nsecrets_env = [\"SVIX_SECRET\"]",
        &[("SVIX_SECRET", "whsec_not*base64")],
    ));
    assert_eq!(refused, "webhook.svix.secrets_env: a secret is not valid base64");
}

#[test]
fn webhook_rules_are_reported_at_the_key_without_the_secrets() {
    // The default block holds what instances share, without a scheme or keys.
    let settings = Settings::from_toml("[webhook.default]\ntolerance = \"2m\"\nlock_expiry = \"5m\"").unwrap();
    assert_eq!(
        settings.webhook("github").unwrap_err().to_string(),
        "webhook.github: no such instance in the settings; a verifier needs its own scheme and keys"
    );
    assert_eq!(
        error(Settings::from_toml("[webhook.default]\ntolerance = \"0s\"")),
        "webhook.default.tolerance: the timestamp tolerance must be at least one second"
    );
    assert_eq!(
        error(Settings::from_toml("[webhook.default]\nsecrets = [\"shared by all\"]")),
        "webhook.default.secrets: keys belong to an instance, not to the default block"
    );
    assert_eq!(
        error(Settings::from_toml("[webhook.github]\nsecrets = [\"s3cr3t\"]")),
        "webhook.github.scheme: every instance needs a scheme"
    );
    assert_eq!(
        error(Settings::from_toml("[webhook.github]\nscheme = \"github\"")),
        "webhook.github.secrets: no secret or key configured"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.gitlab]\nscheme = \"gitlab\"\nsecrets = [\"s3cr3t\"]"
        )),
        "webhook.gitlab.scheme: unknown variant `gitlab`, expected one of `standard_webhooks`, `stripe`, \
         `github`, `slack`, `shopify`, `generic`"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.github]\nscheme = \"github\"\nsecret = \"s3cr3t\""
        )),
        "webhook.github.secret: unknown field `secret`, expected one of `scheme`, `secrets`, `secrets_env`, \
         `public_keys`, `tolerance`, `max_body`, `replay_window`, `lock_expiry`, `store_timeout`"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.github]\nscheme = \"github\"\nsecrets = \"s3cr3t\""
        )),
        "webhook.github.secrets: must be a list of secrets, each a string"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.svix]\nscheme = \"standard_webhooks\"\nsecrets = [\"whsec_s3cr3t!\"]"
        )),
        "webhook.svix.secrets: a secret is not valid base64"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.github]\nscheme = \"github\"\nsecrets = [\"s3cr3t\"]\npublic_keys = [\"whpk_AAAA\"]"
        )),
        "webhook.github.public_keys: ed25519 keys are only used by Standard Webhooks"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.github]\nscheme = \"github\"\nsecrets = [\"s3cr3t\"]\nmax_body = 0"
        )),
        "webhook.github.max_body: the body limit must be at least one byte"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.github]\nscheme = \"github\"\nsecrets = [\"s3cr3t\"]\nreplay_window = \"500ms\""
        )),
        "webhook.github.replay_window: the replay window must be at least one second"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.github]\nscheme = \"github\"\nsecrets = [\"s3cr3t\"]\nstore_timeout = \"0s\""
        )),
        "webhook.github.store_timeout: the replay store timeout must be greater than zero"
    );
}

#[test]
fn a_generic_webhook_scheme_is_a_table() {
    let settings = Settings::from_yaml(
        r#"
webhook:
  acme:
    scheme:
      generic:
        signature_header: X-Acme-Signature
        timestamp_header: X-Acme-Timestamp
        template: "{timestamp}.{body}"
        encoding: base64
        prefix: "v1="
    secrets: [acme-secret]
"#,
    )
    .unwrap();
    let scheme = Scheme::Generic(
        palisade::webhook::GenericScheme::new("X-Acme-Signature")
            .timestamp_header("X-Acme-Timestamp")
            .template("{timestamp}.{body}")
            .encoding(palisade::webhook::Encoding::Base64)
            .prefix("v1="),
    );
    let signer = Signer::builder(scheme).secret("acme-secret").build().unwrap();
    let mut headers = http::HeaderMap::new();
    signer.sign(&mut headers, b"{}").unwrap();
    assert!(headers["x-acme-signature"].to_str().unwrap().starts_with("v1="));
    let acme = settings.webhook("acme").unwrap().build().unwrap();
    acme.verifier().verify(&headers, b"{}").unwrap();
    assert_eq!(
        acme.verifier().verify(&headers, b"[]").unwrap_err().reason(),
        Reason::BadSignature
    );

    assert_eq!(
        error(Settings::from_toml(
            "[webhook.acme]\nscheme = { generic = { signature_header = \"X-Acme-Signature\", \
             timestamp_header = \"X-Acme-Timestamp\" } }\nsecrets = [\"s3cr3t\"]"
        )),
        "webhook.acme.scheme.generic.template: the header \"x-acme-timestamp\" is not covered by the \
         signed-content template"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.acme]\nscheme = { generic = { signature_header = \"X-Acme-Signature\", \
             encoding = \"base32\" } }\nsecrets = [\"s3cr3t\"]"
        )),
        "webhook.acme.scheme.generic.encoding: unknown variant `base32`, expected `hex` or `base64`"
    );
}

#[test]
fn standard_webhooks_public_keys_verify_ed25519_signatures() {
    const SIGNING_KEY: &str =
        "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg==";
    let settings = Settings::from_toml(
        r#"
        [webhook.svix]
        scheme = "standard_webhooks"
        public_keys = ["whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="]
        "#,
    )
    .unwrap();
    let signer = Signer::builder(Scheme::StandardWebhooks)
        .signing_key(SIGNING_KEY)
        .build()
        .unwrap();
    let mut headers = http::HeaderMap::new();
    signer.sign(&mut headers, b"{}").unwrap();
    let svix = settings.webhook("svix").unwrap().build().unwrap();
    assert!(format!("{svix:?}").contains("public_keys: 1"));
    assert_eq!(svix.verifier().verify(&headers, b"{}").unwrap().key_index(), 0);
    assert_eq!(
        svix.verifier().verify(&headers, b"[]").unwrap_err().reason(),
        Reason::BadSignature
    );
    assert_eq!(
        error(Settings::from_toml(
            "[webhook.svix]\nscheme = \"standard_webhooks\"\npublic_keys = [\"whpk_AAAA\"]"
        )),
        "webhook.svix.public_keys: a public key is not a valid base64 ed25519 key"
    );
}

#[test]
fn an_outbox_relay_takes_every_setting() {
    let settings = Settings::from_toml(
        r#"
        [outbox_relay.default]
        max_attempts = 5

        [outbox_relay.orders]
        batch_size = 50
        workers = 4
        concurrency = 8
        poll_interval = "250ms"
        backoff = { initial = "1s", max = "1m", multiplier = 3.0 }
        publish_timeout = "5s"
        lease = "1m"
        store_timeout = "2s"
        retention = "24h"
        cleanup_interval = "5m"
        backlog_interval = "30s"
        "#,
    )
    .unwrap();
    let orders = format!("{:?}", settings.outbox_relay("orders", (), ()));
    for field in [
        "name: \"orders\"",
        "batch_size: 50",
        "workers: 4",
        "concurrency: 8",
        "poll_interval: 250ms",
        "max_attempts: 5",
        "backoff: Backoff { kind: Exponential { base: 1s, multiplier: 3.0, cap: 60s } }",
        "publish_timeout: 5s",
        "lease: 60s",
        "store_timeout: Some(2s)",
        "retention: 86400s",
        "cleanup_interval: 300s",
        "backlog_interval: 30s",
    ] {
        assert!(orders.contains(field), "{field} in {orders}");
    }
    // An instance the file does not name gets the default block.
    let payments = format!("{:?}", settings.outbox_relay("payments", (), ()));
    assert!(payments.contains("name: \"payments\""), "{payments}");
    assert!(payments.contains("max_attempts: 5"), "{payments}");
    assert!(payments.contains("batch_size: 100"), "{payments}");
    // Zero retention deletes on publish.
    let settings = Settings::from_toml("[outbox_relay.orders]\nretention = \"0s\"").unwrap();
    assert!(format!("{:?}", settings.outbox_relay("orders", (), ())).contains("retention: 0ns"));
}

#[test]
fn outbox_relay_rules_are_reported_at_the_key() {
    assert_eq!(
        error(Settings::from_toml("[outbox_relay.orders]\nlease = \"20s\"")),
        "outbox_relay.orders.lease: lease 20s must be longer than twice the publish timeout 10s"
    );
    assert_eq!(
        error(Settings::from_toml("[outbox_relay.orders]\nworkers = 0")),
        "outbox_relay.orders.workers: concurrency and workers must be at least 1"
    );
    assert_eq!(
        error(Settings::from_toml("[outbox_relay.orders]\nconcurrency = 0")),
        "outbox_relay.orders.concurrency: concurrency and workers must be at least 1"
    );
    assert_eq!(
        error(Settings::from_toml("[outbox_relay.default]\nbatch_size = 0")),
        "outbox_relay.default.batch_size: batch size must be at least 1"
    );
    assert_eq!(
        error(Settings::from_toml("[outbox_relay.orders]\nmax_attempts = 0")),
        "outbox_relay.orders.max_attempts: max attempts must be at least 1"
    );
    assert_eq!(
        error(Settings::from_toml("[outbox_relay.orders]\nstore_timeout = \"30s\"")),
        "outbox_relay.orders.store_timeout: store timeout 30s plus the publish timeout must be shorter than the lease 30s"
    );
    assert_eq!(
        error(Settings::from_toml("[outbox_relay.orders]\npoll_interval = \"0s\"")),
        "outbox_relay.orders.poll_interval: poll interval must be greater than zero"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[outbox_relay.orders]\nbackoff = { initial = \"2s\", max = \"1s\", multiplier = 2.0 }"
        )),
        "outbox_relay.orders.backoff: invalid backoff: backoff cap 1s is below the base wait 2s"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[outbox_relay.orders]\nbackoff = { initial = \"2s\", max = \"1m\" }"
        )),
        "outbox_relay.orders.backoff: missing field `multiplier`"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[outbox_relay.orders]\nbackoff = { initial = \"2s\", max = \"1m\", multiplier = 2.0, jitter = 0.5 }"
        )),
        "outbox_relay.orders.backoff.jitter: unknown field `jitter`, expected one of `initial`, `max`, `multiplier`"
    );
    assert_eq!(
        error(Settings::from_toml("[outbox_relay.orders]\nbatchsize = 10")),
        "outbox_relay.orders.batchsize: unknown field `batchsize`, expected one of `batch_size`, `workers`, \
         `concurrency`, `poll_interval`, `max_attempts`, `backoff`, `publish_timeout`, `lease`, \
         `store_timeout`, `retention`, `cleanup_interval`, `backlog_interval`"
    );
}

#[test]
fn webhooks_and_relays_read_from_yaml_and_the_environment() {
    let settings = Settings::from_yaml(&format!(
        r#"
webhook:
  github:
    scheme: github
    secrets: ["{GITHUB_SECRET}"]
    max_body: 4096
outbox_relay:
  orders:
    batch_size: 20
    backoff: {{ initial: 100ms, max: 10s, multiplier: 2.0 }}
"#
    ))
    .unwrap();
    let github = settings.webhook("github").unwrap().build().unwrap();
    assert!(format!("{github:?}").contains("max_body: 4096"));
    github.verifier().verify(&github_request(), b"Hello, World!").unwrap();
    let orders = format!("{:?}", settings.outbox_relay("orders", (), ()));
    assert!(orders.contains("batch_size: 20"), "{orders}");
    assert!(
        orders.contains("backoff: Backoff { kind: Exponential { base: 100ms, multiplier: 2.0, cap: 10s } }"),
        "{orders}"
    );

    let settings = load(
        "[webhook.github]\nsecrets_env = [\"GITHUB_WEBHOOK_SECRET\"]",
        &[
            ("PALISADE__OUTBOX_RELAY__ORDERS__BATCH_SIZE", "25"),
            ("PALISADE__OUTBOX_RELAY__ORDERS__LEASE", "2m"),
            ("PALISADE__WEBHOOK__GITHUB__SCHEME", "github"),
            ("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET),
        ],
    )
    .unwrap();
    let orders = format!("{:?}", settings.outbox_relay("orders", (), ()));
    assert!(orders.contains("batch_size: 25"), "{orders}");
    assert!(orders.contains("lease: 120s"), "{orders}");
    let github = settings.webhook("github").unwrap().build().unwrap();
    github.verifier().verify(&github_request(), b"Hello, World!").unwrap();
}

/// Far past tokio's clock range; humantime reads it, and a layer must
/// neither panic at load nor when it runs.
const FOREVER: &str = "10000000000000000000s";

#[test]
fn a_relay_publish_timeout_past_the_clocks_range_is_refused_at_load() {
    let refused = "outbox_relay.orders.lease: lease 30s must be longer than twice the publish timeout \
                   10000000000000000000s";
    assert_eq!(
        error(Settings::from_toml(&format!(
            "[outbox_relay.orders]\npublish_timeout = \"{FOREVER}\""
        ))),
        refused
    );
    assert_eq!(
        error(load(
            "",
            &[("PALISADE__OUTBOX_RELAY__ORDERS__PUBLISH_TIMEOUT", FOREVER)]
        )),
        refused
    );
}

#[tokio::test(start_paused = true)]
async fn an_idempotency_retention_past_the_clocks_range_stores_and_replays() {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{Layer, ServiceExt, service_fn};

    let settings = Settings::from_toml(&format!("[idempotency.orders]\nretention = \"{FOREVER}\"")).unwrap();
    let layer = settings.idempotency("orders").build().unwrap();
    let svc = layer.layer(service_fn(|_: http::Request<Full<Bytes>>| async {
        let created = http::Response::builder()
            .status(201)
            .body(Full::new(Bytes::from_static(b"ok")));
        Ok::<_, std::convert::Infallible>(created.unwrap())
    }));
    let post = || {
        http::Request::post("/orders")
            .header("idempotency-key", "order-1")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let first = svc.clone().oneshot(post()).await.unwrap();
    assert_eq!(first.status(), 201);
    let replayed = svc.oneshot(post()).await.unwrap();
    assert_eq!(replayed.status(), 201);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
}

#[test]
fn a_count_window_caps_an_unset_minimum_calls_at_its_size() {
    let settings = Settings::from_toml("[circuit_breaker.payments]\nwindow = { count = 50 }").unwrap();
    settings.circuit_breaker("payments").build().unwrap();
    assert_eq!(
        error(Settings::from_toml(
            "[circuit_breaker.payments]\nwindow = { count = 50 }\nminimum_calls = 100"
        )),
        "circuit_breaker.payments.minimum_calls: minimum_calls (100) exceeds the count-based window size (50)"
    );
}

/// Whether an instance is keyed is decided in code (`build_keyed`), so the
/// keyed settings are checked at load for every instance, as the
/// bulkhead's `max_keys` is.
#[test]
fn keyed_breaker_settings_are_checked_at_load() {
    assert_eq!(
        error(Settings::from_toml("[circuit_breaker.hosts]\nmax_keys = 0")),
        "circuit_breaker.hosts.max_keys: max_keys must be at least 1"
    );
    assert_eq!(
        error(Settings::from_toml(
            "[circuit_breaker.default]\nkey_idle_timeout = \"0s\""
        )),
        "circuit_breaker.default.key_idle_timeout: key_idle_timeout must be longer than zero"
    );
    let settings = Settings::from_toml("[circuit_breaker.hosts]\nmax_keys = 8\nkey_idle_timeout = \"1m\"").unwrap();
    let hosts = settings
        .circuit_breaker("hosts")
        .build_keyed(|host: &String| host.clone())
        .unwrap();
    assert!(format!("{hosts:?}").contains("max_keys: 8"), "{hosts:?}");
}

/// `delay` and `percentile` are two ways to say when to hedge: an instance
/// giving one replaces the default block's, whichever that is.
#[test]
fn a_hedge_instance_choosing_delay_or_percentile_replaces_the_default_blocks_choice() {
    let settings = Settings::from_toml(
        r#"
        [hedge.default]
        delay = "50ms"
        max_attempts = 3
        [hedge.search]
        percentile = { percentile = 0.9, samples = 500, min_samples = 50 }
        [hedge.lookup]
        replay_limit = 1024
        "#,
    )
    .unwrap();
    let search = format!("{:?}", settings.hedge("search"));
    assert!(search.contains("Percentile"), "{search}");
    assert!(search.contains("max_attempts: 3"), "{search}");
    let lookup = format!("{:?}", settings.hedge("lookup"));
    assert!(lookup.contains("Fixed(50ms)"), "{lookup}");
    settings.hedge("search").build().unwrap();

    let settings = load(
        "[hedge.default]\npercentile = { percentile = 0.9, samples = 500, min_samples = 50 }",
        &[("PALISADE__HEDGE__SEARCH__DELAY", "20ms")],
    )
    .unwrap();
    let search = format!("{:?}", settings.hedge("search"));
    assert!(search.contains("Fixed(20ms)"), "{search}");
    // Both in one table are still refused.
    assert_eq!(
        error(Settings::from_toml(
            "[hedge.default]\ndelay = \"50ms\"\npercentile = { percentile = 0.9, samples = 10, min_samples = 1 }"
        )),
        "hedge.default.delay: set either delay or percentile"
    );
}

/// Environment variables are read lowercased and split at `__`, so an
/// instance named with a capital or a doubled, leading or trailing `_` could
/// never be set from the environment: a variable meant for it would make
/// another instance. Such names are refused at load, naming the instance.
#[test]
fn instance_names_an_environment_variable_cannot_address_are_refused() {
    let rule = "an instance name must be lowercase ASCII letters, digits and `-`, in words joined by \
                single underscores, for environment variables to address it";
    assert_eq!(
        error(load(
            "[bulkhead.ordersAPI]\nmax_concurrent = 4",
            &[("PALISADE__BULKHEAD__ORDERSAPI__MAX_CONCURRENT", "8")]
        )),
        format!("bulkhead.ordersAPI: {rule}")
    );
    for name in ["orders__api", "_orders", "orders_", "orders.api"] {
        assert_eq!(
            error(Settings::from_toml(&format!("[retry.\"{name}\"]\nmax_attempts = 2"))),
            format!("retry.{name}: {rule}")
        );
    }
    // What an environment variable can address loads, and the variable sets
    // it; a `-` is addressed as it is (by `env` or a container runtime, not
    // by a POSIX shell's `export`).
    for name in ["orders_api_v2", "orders-api"] {
        let var = format!("PALISADE__BULKHEAD__{}__MAX_CONCURRENT", name.to_uppercase());
        let settings = load(
            &format!("[bulkhead.{name}]\nmax_concurrent = 4"),
            &[(var.as_str(), "8")],
        )
        .unwrap();
        let api = format!("{:?}", settings.bulkhead(name));
        assert!(api.contains("limit: Fixed(8)"), "{name}: {api}");
    }
}

/// Loading builds every instance once to check it; those builds publish no
/// metric (a breaker named `default` shown closed, or a live breaker's state
/// reset by a reload).
#[test]
fn loading_settings_publishes_no_metric() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let settings = metrics::with_local_recorder(&recorder, || {
        Settings::from_toml("[circuit_breaker.payments]\nfailure_rate = 30\n\n[bulkhead.payments]\nmax_concurrent = 4")
    })
    .unwrap();
    assert!(snapshotter.snapshot().into_vec().is_empty());
    // Building an instance for use publishes its metrics, as it should.
    metrics::with_local_recorder(&recorder, || settings.circuit_breaker("payments").build().unwrap());
    let names: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, ..)| key.key().name().to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "palisade_circuit_breaker_state"), "{names:?}");
}

#[test]
fn sizes_no_machine_could_hold_are_refused_at_load_not_allocated() {
    // Each would have tried to allocate at load: a capacity overflow panic,
    // or gigabytes.
    let refused = |toml: &str| {
        let result = std::panic::catch_unwind(|| Settings::from_toml(toml)).expect("load must not panic");
        error(result)
    };
    let hedge =
        refused("[hedge.search]\npercentile = { percentile = 0.95, samples = 9223372036854775807, min_samples = 1 }");
    assert!(hedge.starts_with("hedge.search"), "{hedge}");
    assert!(hedge.contains("1000000"), "{hedge}");
    let count = refused("[circuit_breaker.payments]\nwindow = { count = 4294967295 }");
    assert!(count.starts_with("circuit_breaker.payments"), "{count}");
    let time = refused("[circuit_breaker.payments]\nwindow = { time = \"1200h\", buckets = 4294967295 }");
    assert!(time.starts_with("circuit_breaker.payments"), "{time}");
}

#[test]
fn a_method_in_lower_case_is_refused_rather_than_matching_nothing() {
    // Methods are case-sensitive: `post` is an extension method no request has.
    let idempotency = error(Settings::from_toml("[idempotency.orders]\nmethods = [\"post\"]"));
    assert!(idempotency.starts_with("idempotency.orders.methods"), "{idempotency}");
    assert!(idempotency.contains("POST"), "{idempotency}");
    let retry = error(Settings::from_toml(
        "[retry.catalog]\nretry_methods = [\"GET\", \"get\"]",
    ));
    assert!(retry.starts_with("retry.catalog.retry_methods"), "{retry}");
    Settings::from_toml("[idempotency.orders]\nmethods = [\"POST\", \"PATCH\"]").unwrap();
}
