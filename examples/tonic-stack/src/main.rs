//! `tonic-stack`: the inventory gRPC service and its client, built from
//! palisade layers. With no arguments it runs a walkthrough in one process;
//! `serve` and `client` run the two sides apart.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use palisade_core::BoxError;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_stack::client::{Client, ClientConfig, client};
use tonic_stack::proto::{GetStockRequest, WatchStockRequest};
use tonic_stack::server::{ServerConfig, channel, spawn};
use tonic_stack::warehouse::{Behaviour, Warehouse};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the walkthrough: warehouse, inventory server and client in one
    /// process, on loopback ports (the default).
    Demo,
    /// Serves the inventory (and a warehouse for it) until interrupted.
    Serve {
        /// Where the inventory listens.
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: SocketAddr,
        /// Where its warehouse listens.
        #[arg(long, default_value = "127.0.0.1:50052")]
        warehouse_addr: SocketAddr,
    },
    /// Calls a running inventory through the client stack.
    Client {
        /// The inventory's address.
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: SocketAddr,
        #[command(subcommand)]
        call: Call,
    },
}

#[derive(Debug, Subcommand)]
enum Call {
    /// `GetStock`: how many of an item are in stock.
    Get {
        /// The item.
        sku: String,
    },
    /// `WatchStock`: the stock of an item, counted several times.
    Watch {
        /// The item.
        sku: String,
        /// How many counts.
        #[arg(default_value_t = 3)]
        updates: u32,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Args::parse().command.unwrap_or(Command::Demo) {
        Command::Demo => demo().await,
        Command::Serve { addr, warehouse_addr } => serve(addr, warehouse_addr).await,
        Command::Client { addr, call } => call_once(addr, call).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tonic-stack: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: SocketAddr, warehouse_addr: SocketAddr) -> Result<(), BoxError> {
    let warehouse = tokio::spawn(Warehouse::new().serve(TcpListener::bind(warehouse_addr).await?));
    let inventory = spawn(TcpListener::bind(addr).await?, warehouse_addr, &ServerConfig::default())?;
    println!("warehouse on {warehouse_addr}, inventory on {addr}; Ctrl-C stops");
    tokio::select! {
        r = warehouse => r??,
        r = inventory.task => r??,
    }
    Ok(())
}

async fn call_once(addr: SocketAddr, call: Call) -> Result<(), BoxError> {
    let Client { mut inventory, .. } = client(channel(addr)?, &ClientConfig::default())?;
    match call {
        Call::Get { sku } => match inventory.get_stock(GetStockRequest { sku }).await {
            Ok(stock) => println!("{:?}", stock.into_inner()),
            Err(status) => println!("{}", describe(&status)),
        },
        Call::Watch { sku, updates } => {
            let mut stream = inventory
                .watch_stock(WatchStockRequest { sku, updates })
                .await?
                .into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(stock)) => println!("{stock:?}"),
                    Ok(None) => break,
                    Err(status) => {
                        println!("{}", describe(&status));
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A status's code, message and pushback, on one line.
fn describe(status: &tonic::Status) -> String {
    let pushback = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .map(|ms| format!(", pushback {ms} ms"))
        .unwrap_or_default();
    format!("{:?}: {}{pushback}", status.code(), status.message())
}

async fn demo() -> Result<(), BoxError> {
    let warehouse = Warehouse::new();
    let warehouse_listener = TcpListener::bind("127.0.0.1:0").await?;
    let warehouse_addr = warehouse_listener.local_addr()?;
    tokio::spawn(warehouse.clone().serve(warehouse_listener));
    let server_config = ServerConfig {
        upstream_failures: 3,
        upstream_open: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server = spawn(TcpListener::bind("127.0.0.1:0").await?, warehouse_addr, &server_config)?;
    let client_config = ClientConfig {
        breaker_failures: 4,
        breaker_open: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let Client {
        mut inventory, breaker, ..
    } = client(channel(server.addr)?, &client_config)?;
    println!("warehouse on {warehouse_addr}, inventory on {}\n", server.addr);

    println!("1. A call through both stacks:");
    let stock = inventory.get_stock(sku("apple")).await?.into_inner();
    println!("   {} in stock: {}\n", stock.sku, stock.available);

    println!("2. The warehouse answers UNAVAILABLE twice; the client retries:");
    warehouse.script([Behaviour::Fail(Code::Unavailable), Behaviour::Fail(Code::Unavailable)]);
    let before = warehouse.calls();
    let stock = inventory.get_stock(sku("apple")).await?.into_inner();
    println!(
        "   {} in stock after {} warehouse calls\n",
        stock.available,
        warehouse.calls() - before
    );

    println!("3. A stream of three counts:");
    let mut stream = inventory
        .watch_stock(WatchStockRequest {
            sku: "pear".into(),
            updates: 3,
        })
        .await?
        .into_inner();
    while let Some(stock) = stream.message().await? {
        println!("   {} in stock: {}", stock.sku, stock.available);
    }

    println!("\n4. INTERNAL is not retried:");
    warehouse.script([Behaviour::Fail(Code::Internal)]);
    let before = warehouse.calls();
    let status = inventory.get_stock(sku("apple")).await.unwrap_err();
    println!("   {} after {} call\n", describe(&status), warehouse.calls() - before);

    println!("5. A 300 ms deadline, and the warehouse stalls:");
    warehouse.script([Behaviour::Hang]);
    let mut request = tonic::Request::new(sku("apple"));
    request.set_timeout(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let status = inventory.get_stock(request).await.unwrap_err();
    println!(
        "   {} after {} ms; the warehouse was sent grpc-timeout {}",
        describe(&status),
        started.elapsed().as_millis(),
        warehouse.timeouts().last().cloned().flatten().unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("   warehouse calls cancelled: {}\n", warehouse.cancelled());

    println!("6. The warehouse goes down: the server's breaker opens, then the client's:");
    breaker.reset();
    server.upstream_breaker.reset();
    warehouse.script([Behaviour::Fail(Code::Unavailable); 20]);
    for n in 1..=3 {
        let started = tokio::time::Instant::now();
        let before = warehouse.calls();
        let status = inventory.get_stock(sku("apple")).await.unwrap_err();
        println!(
            "   call {n}: {} in {} ms, {} warehouse calls (server's breaker {:?}, client's {:?})",
            describe(&status),
            started.elapsed().as_millis(),
            warehouse.calls() - before,
            server.upstream_breaker.state(),
            breaker.state()
        );
    }
    Ok(())
}

fn sku(sku: &str) -> GetStockRequest {
    GetStockRequest { sku: sku.into() }
}
