//! `hyper-stack`: the palisade hyper example server; `--help` lists the flags.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use http::Uri;
use hyper_stack::{Config, generate_secret, serve, serve_service, upstream};
use tokio::net::TcpListener;

/// A plain hyper server with a verified webhook receiver (`POST /webhooks`)
/// and a proxy route (`/proxy/{path}`) guarded by retry, a circuit breaker,
/// a bulkhead and a per-attempt timeout.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:3100")]
    listen: SocketAddr,
    /// Standard Webhooks secret (`whsec_...`); generated and printed when absent.
    #[arg(long, env = "WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
    /// Base URL of the upstream the proxy route forwards to; when absent a
    /// built-in demo upstream is started on `--upstream-listen`.
    #[arg(long, env = "UPSTREAM_URL")]
    upstream_url: Option<Uri>,
    /// Address of the built-in demo upstream.
    #[arg(long, env = "UPSTREAM_LISTEN", default_value = "127.0.0.1:3101")]
    upstream_listen: SocketAddr,
    /// Consecutive failed upstream attempts that open the circuit breaker.
    #[arg(long, default_value_t = 5)]
    breaker_failures: u32,
    /// Seconds the breaker stays open before probing the upstream again.
    #[arg(long, default_value_t = 10)]
    breaker_open_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper-stack: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let upstream_url = match args.upstream_url {
        Some(url) => url,
        None => {
            let listener = TcpListener::bind(args.upstream_listen)
                .await
                .map_err(|e| format!("cannot listen on {} for the demo upstream: {e}", args.upstream_listen))?;
            let addr = listener.local_addr()?;
            let (_control, demo) = upstream::service();
            // Ends with the process.
            tokio::spawn(serve_service(listener, demo, std::future::pending()));
            println!("demo upstream on http://{addr}");
            format!("http://{addr}").parse()?
        }
    };
    let webhook_secret = match args.webhook_secret {
        Some(secret) => secret,
        None => {
            let secret = generate_secret()?;
            println!("webhook secret (generated): {secret}");
            secret
        }
    };
    let mut config = Config::new(webhook_secret, upstream_url);
    config.breaker_failures = args.breaker_failures;
    config.breaker_open = Duration::from_secs(args.breaker_open_secs);

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("  POST /webhooks        Standard Webhooks receiver");
    println!("  ANY  /proxy/{{path}}    forwarded to {}", config.upstream);
    serve(listener, config, async {
        // Without a signal handler the server runs until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        println!("shutting down: finishing the requests in flight");
    })
    .await?;
    Ok(())
}
