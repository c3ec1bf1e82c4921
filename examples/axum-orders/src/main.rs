//! `axum-orders`: the palisade orders service; `--help` lists the flags.

use std::net::SocketAddr;
use std::process::ExitCode;

use std::time::Duration;

use axum_orders::{
    Backend, Config, DEFAULT_DATABASE_URL, Layers, PaymentsSim, app, generate_secret, parse_duration, redact_url, serve,
};
use clap::Parser;
use http::Uri;
use tokio::net::TcpListener;

/// An orders service: idempotent `POST /orders` charging a payments service
/// through retry, a circuit breaker, a bulkhead and a timeout, with its events
/// published through a transactional outbox.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Database URL: `sqlite:<file>` (created when missing) or
    /// `postgres://user@host:port/db` (tables in the connection's `search_path`;
    /// pick a schema with `?options=-c%20search_path%3D<schema>`). Other schemes
    /// are refused.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Base URL of a real payments service; when absent the built-in simulator
    /// is started on `--payments-sim-listen`.
    #[arg(long, env = "PAYMENTS_URL")]
    payments_url: Option<Uri>,
    /// Address of the built-in payments simulator.
    #[arg(long, env = "PAYMENTS_SIM_LISTEN", default_value = "127.0.0.1:3001")]
    payments_sim_listen: SocketAddr,
    /// Standard Webhooks secret (`whsec_...`) for `POST /webhooks/payments`; generated and printed when absent.
    #[arg(long, env = "WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
    /// Stripe endpoint secret (`whsec_...`) for `POST /webhooks/stripe`; generated and printed when absent.
    #[arg(long, env = "STRIPE_SECRET")]
    stripe_secret: Option<String>,
    /// Redis URL (`redis://host:6379`) for the idempotency and webhook replay
    /// stores, shared by every instance (keys start with `axum-orders:`);
    /// when absent both are in memory, per process.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Keys the in-memory idempotency store holds (without Redis). Responses
    /// are kept 24 h and never dropped early: once every key is retained, an
    /// order with a new key is answered 503.
    #[arg(long, env = "IDEMPOTENCY_KEYS", default_value_t = palisade::idempotency::DEFAULT_MAX_KEYS, value_parser = clap::value_parser!(usize))]
    idempotency_keys: usize,
    /// NATS URL (`nats://host:4222`): the outbox publishes to JetStream on
    /// `orders.events.<event type>` in stream `ORDERS` (created when missing);
    /// when absent events go to an in-process channel and are printed.
    /// `/health` reports the broker's connection ("degraded", still 200, while
    /// it is down: orders are taken and their events wait in the outbox).
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// `off` serves the same routes without any palisade layer, to compare
    /// their cost in a load benchmark: no idempotency (a repeated key creates
    /// another order), no outbox publish hook (events leave at the relay's
    /// next poll), no webhook verification (unsigned webhooks are applied),
    /// and payments with only a timeout (no retry, breaker or bulkhead).
    /// Never run `off` where anyone else can reach it.
    #[arg(long, env = "PALISADE_LAYERS", value_enum, default_value = "on")]
    layers: Layers,
    /// Time allowed to one request on the orders routes (`500ms`, `10s`,
    /// `2m`); past it the answer is a 504 and the order can be finished by a
    /// retry with the same Idempotency-Key.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// How long an order may stay unfinished after its last attempt before it
    /// is cancelled and its payment refunded (`15m`, `1h`); must exceed
    /// `--request-timeout`.
    #[arg(long, env = "ABANDON_AFTER", default_value = "15m", value_parser = parse_duration)]
    abandon_after: Duration,
    /// `on`: while the payments breaker is open (or its bulkhead full), an
    /// order is stored `payment_queued` and answered `202 Accepted`, and the
    /// outbox relay charges it once payments take calls again. `off`: such an
    /// order is refused with a 503 and `Retry-After`.
    #[arg(long, env = "QUEUE_PAYMENTS", default_value = "on", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    queue_payments: bool,
    /// Layer settings for the instances `payments`, `orders-api` and `orders`
    /// from a TOML or YAML file (see `palisade.toml` beside this crate), with
    /// `PALISADE__...` environment variables over it. Without it the built-in
    /// settings apply.
    #[arg(long, env = "PALISADE_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum-orders: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Refused before anything listens or connects.
    Backend::of(&args.database_url).map_err(|e| format!("--database-url: {e}"))?;
    let payments_url = match args.payments_url {
        Some(url) => url,
        None => {
            let listener = TcpListener::bind(args.payments_sim_listen).await.map_err(|e| {
                format!(
                    "cannot listen on {} for the payments simulator: {e}",
                    args.payments_sim_listen
                )
            })?;
            let addr = listener.local_addr()?;
            // Ends with the process.
            tokio::spawn(axum::serve(listener, PaymentsSim::default().router()).into_future());
            println!("payments simulator on http://{addr} (POST /charges, GET /charges, POST /refunds, GET|PUT /mode)");
            format!("http://{addr}").parse()?
        }
    };
    let webhook_secret = secret_or_generated(args.webhook_secret, "webhook secret")?;
    let stripe_secret = secret_or_generated(args.stripe_secret, "stripe secret")?;
    let mut config = Config::new(args.database_url, payments_url, webhook_secret, stripe_secret);
    config.redis_url = args.redis_url;
    config.idempotency_keys = args.idempotency_keys;
    config.nats_url = args.nats_url;
    config.layers = args.layers;
    config.request_timeout = args.request_timeout;
    config.abandon_after = args.abandon_after;
    config.payments.queue_when_unavailable = args.queue_payments;
    if let Some(path) = &args.config {
        config.layer_settings = Some(palisade::config::Settings::load(Some(path), "PALISADE")?);
    }

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let mut app = app(&config).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!(
        "database {}, payments at {}",
        redact_url(&config.database_url),
        redact_url(&config.payments_url.to_string())
    );
    if config.layers == Layers::Off {
        println!("palisade layers OFF: no idempotency, no webhook verification, payments without retry or breaker");
    }
    if let Some(redis) = &config.redis_url {
        println!(
            "idempotency and webhook replay stores in Redis at {}",
            redact_url(redis)
        );
    }
    match app.events.take() {
        Some(mut events) => {
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    println!(
                        "published {} for {} {}",
                        event.event_type, event.aggregate_type, event.aggregate_id
                    );
                }
            });
        }
        None => println!(
            "events published to NATS on {}<event type> (stream {})",
            config.nats_subject_prefix, config.nats_stream
        ),
    }
    serve(listener, app, async {
        // Without a signal handler the server runs until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        println!("shutting down: finishing the requests in flight");
    })
    .await?;
    Ok(())
}

fn secret_or_generated(secret: Option<String>, what: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    match secret {
        Some(secret) if secret.starts_with("whsec_") => Ok(secret),
        Some(_) => Err(format!("the {what} must start with whsec_").into()),
        None => {
            let secret = generate_secret()?;
            println!("{what} (generated): {secret}");
            Ok(secret)
        }
    }
}

#[cfg(test)]
mod tests {
    use axum_orders::redact_url;

    #[test]
    fn printed_urls_hide_passwords_only() {
        assert_eq!(
            redact_url("postgres://orders:s3cr@t:x@db.internal:5432/shop?sslmode=require"),
            "postgres://orders:***@db.internal:5432/shop?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(redact_url("sqlite:axum-orders.db"), "sqlite:axum-orders.db");
        assert_eq!(
            redact_url("postgres://127.0.0.1/test?options=-c%20search_path%3Da@b"),
            "postgres://127.0.0.1/test?options=-c%20search_path%3Da@b"
        );
    }
}
