//! Test support shared by every integration test: a fresh PostgreSQL database per
//! test, a fake upstream provider server, a moto server for the AWS paths, and fake
//! Lago, Stripe, webhook and OTLP receivers.

pub mod fake_billing;
pub mod fake_lago;
pub mod fake_otlp;
pub mod fake_stripe;
pub mod fake_upstream;
pub mod fake_webhook;
pub mod gateway;
pub mod lambda_events;
pub mod log_capture;
pub mod moto;
pub mod test_db;

/// Serves `app` on a free port of 127.0.0.1 in a background task until the returned sender
/// is dropped (or sent to): the shared start of the fake servers.
#[allow(clippy::expect_used)]
pub(crate) async fn spawn_server(
    name: &str,
    app: axum::Router,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{name}: cannot bind a port on 127.0.0.1: {e}"));
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await;
    });
    (addr, shutdown)
}
