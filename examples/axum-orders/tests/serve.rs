//! The service over a real socket, through `serve` and its graceful shutdown.

use std::time::Duration;

use axum_orders::{Config, PaymentsSim, app, generate_secret, serve};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

#[tokio::test]
async fn serves_orders_over_a_socket_and_shuts_down() {
    let sim = PaymentsSim::with_seed(3);
    let sim_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = sim_listener.local_addr().unwrap();
    tokio::spawn(axum::serve(sim_listener, sim.router()).into_future());
    let db = std::env::temp_dir().join(format!("axum-orders-serve-{}.db", uuid::Uuid::now_v7().simple()));
    let config = Config::new(
        format!("sqlite:{}", db.display()),
        format!("http://{sim_addr}").parse().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    let mut app = app(&config).await.unwrap();
    let mut events = app.events.take().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app, async {
        let _ = stopped.await;
    }));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let order = || {
        Request::post(format!("http://{addr}/orders"))
            .header("content-type", "application/json")
            .header("idempotency-key", "socket-1")
            .body(Full::new(Bytes::from_static(
                br#"{"customer_id":"c","items":[{"product_id":"p","quantity":3}],"total_amount":300,"currency":"USD"}"#,
            )))
            .unwrap()
    };
    let res = client.request(order()).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created = res.into_body().collect().await.unwrap().to_bytes();
    let id = serde_json::from_slice::<serde_json::Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let replay = client.request(order()).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.into_body().collect().await.unwrap().to_bytes(), created);
    assert_eq!(sim.charges(), 1);

    let got = client
        .request(
            Request::get(format!("http://{addr}/orders/{id}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.into_body().collect().await.unwrap().to_bytes(), created);

    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.aggregate_id, id);

    drop(client);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn the_binary_refuses_an_unsupported_database_url() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_axum-orders"))
        .args(["--database-url", "mysql://127.0.0.1/orders", "--listen", "127.0.0.1:0"])
        .args(["--payments-sim-listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing started: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "axum-orders: --database-url: unsupported database URL \"mysql://127.0.0.1/orders\": \
         use sqlite:<file> or postgres://user@host:port/database\n"
    );
}

#[test]
fn the_binary_documents_its_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_axum-orders"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--database-url",
        "postgres://",
        "--nats-url",
        "--layers",
        "PALISADE_LAYERS",
        "- off:",
        "--request-timeout",
        "REQUEST_TIMEOUT",
        "--abandon-after",
        "ABANDON_AFTER",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn the_binary_takes_its_request_timeout_from_a_flag_or_the_environment() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_axum-orders"));
        cmd.args(["--listen", "127.0.0.1:0", "--payments-sim-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("REQUEST_TIMEOUT")
            .env_remove("ABANDON_AFTER");
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd.output().unwrap()
    };
    // Read and checked against the abandon delay before anything is opened.
    let refused = "axum-orders: abandon_after (--abandon-after) must exceed request_timeout \
                   (--request-timeout): an order still being created is never cancelled\n";
    for out in [
        run(&["--request-timeout", "20m"], &[]),
        run(&[], &[("REQUEST_TIMEOUT", "20m")]),
        run(&["--request-timeout", "2s", "--abandon-after", "2s"], &[]),
    ] {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8(out.stderr).unwrap(), refused);
    }
    let out = run(&["--request-timeout", "10"], &[]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("\"10\" is not a duration such as 500ms, 10s, 15m or 1h 30m: time unit needed"),
        "{stderr}"
    );
}
