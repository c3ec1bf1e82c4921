//! `client-stack`: drives the palisade client stack against two local
//! servers, one steady and one flaky, and prints what the layers do.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use client_stack::flaky::FlakyServer;
use client_stack::{DriveConfig, StackConfig, client_stack, client_stack_over_hyper, drive};
use tokio::net::TcpListener;

/// Runs palisade's one-call client stack (idempotency key → retry with
/// budget → circuit breaker per host → bulkhead → timeout per attempt →
/// reqwest) against a steady and a flaky local server, printing a line per
/// second and the stack's health report at the end.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seconds to run for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per second, alternating between the two servers.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seed of the servers' choices, for repeatable runs.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Send through hyper-util's client instead of reqwest.
    #[arg(long)]
    hyper: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client-stack: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let steady = FlakyServer::start(TcpListener::bind("127.0.0.1:0").await?, args.seed)?;
    steady.control().set_failure_rate(0.05);
    let flaky = FlakyServer::start(TcpListener::bind("127.0.0.1:0").await?, args.seed.wrapping_add(1))?;
    flaky.control().set_failure_rate(0.2);
    flaky.control().set_slow_rate(0.05);
    println!("steady server on {} (5 % 503)", steady.addr());
    println!(
        "flaky server on {} (20 % 503, 5 % slow; down during seconds 3 to 5, then 5 % 503; \
         every answer takes 200 ms during seconds 8 and 9)",
        flaky.addr()
    );
    let targets = vec![
        (
            "steady".to_owned(),
            format!("http://{}/charges", steady.addr()).parse()?,
        ),
        ("flaky".to_owned(), format!("http://{}/charges", flaky.addr()).parse()?),
    ];
    let control = flaky.control().clone();
    let config = DriveConfig {
        seconds: args.seconds,
        rate: args.rate,
    };
    let stack = if args.hyper {
        client_stack_over_hyper(&StackConfig::default())?
    } else {
        client_stack(&StackConfig::default())?
    };
    let health = stack.health.clone();
    let total = drive(stack, &config, targets, |second, line| {
        println!("{line}");
        match second {
            2 => control.set_failure_rate(1.0),
            5 => {
                control.set_failure_rate(0.05);
                control.set_slow_rate(0.0);
            }
            7 => control.set_latency(Duration::from_millis(200)),
            9 => control.set_latency(Duration::ZERO),
            _ => {}
        }
    })
    .await?;
    println!("total {total}");
    println!(
        "server side: steady received {}, flaky received {}",
        steady.control().requests(),
        flaky.control().requests()
    );
    println!("health: {}", health.snapshot());
    Ok(())
}
