//! Declarative configuration: files, the environment, defaults per layer
//! type, and errors that name the key.
#![cfg(all(feature = "config", feature = "full"))]

use palisade::config::{ConfigError, Settings};

fn error(result: Result<Settings, ConfigError>) -> String {
    result.expect_err("the configuration must be refused").to_string()
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
    assert!(payments.contains("minimum_calls: 10"), "{payments}");
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
        "circuit_breakers: unknown layer type; expected one of: circuit_breaker, bulkhead, retry, idempotency, deadline, hedge"
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
    assert_eq!(
        error(Settings::from_toml("[circuit_breaker.payments]\nfailure_rate = \"of\"")),
        "circuit_breaker.payments.failure_rate: data did not match any variant of untagged enum Switch"
    );
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
