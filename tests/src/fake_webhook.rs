//! A webhook receiver: records every POST (its `Switchboard-Signature` header and raw
//! body) and answers 200, or the statuses queued with [`FakeWebhook::fail_next`], after
//! the delay set with [`FakeWebhook::set_delay`] (a slow receiver). A delivery is
//! recorded when the answer is ready; one whose sender gave up waiting is recorded too,
//! with `answered: false`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::oneshot;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub signature: Option<String>,
    pub body: Vec<u8>,
    /// The status the receiver answered (or would have).
    pub status: u16,
    /// False when the sender stopped waiting before the answer (its timeout).
    pub answered: bool,
}

#[derive(Default)]
struct Inner {
    deliveries: Vec<Delivery>,
    statuses: VecDeque<u16>,
    delay: Duration,
}

pub struct FakeWebhook {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _shutdown: oneshot::Sender<()>,
}

impl FakeWebhook {
    pub async fn start() -> FakeWebhook {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&inner));
        let (addr, shutdown) = crate::spawn_server("fake webhook", app).await;
        FakeWebhook {
            addr,
            inner,
            _shutdown: shutdown,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().statuses.extend(statuses.iter().copied());
    }

    /// Every delivery waits this long before it is answered.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (status, delay) = {
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.statuses.pop_front().unwrap_or(200), inner.delay)
    };
    let delivery = Delivery {
        signature: headers
            .get("switchboard-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.to_vec(),
        status,
        answered: false,
    };
    // Recorded even when the sender stops waiting (hyper drops this future then).
    let mut record = RecordOnDrop {
        inner: Arc::clone(&inner),
        delivery: Some(delivery),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(delivery) = record.delivery.as_mut() {
        delivery.answered = true;
    }
    drop(record);
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

struct RecordOnDrop {
    inner: Arc<Mutex<Inner>>,
    delivery: Option<Delivery>,
}

impl Drop for RecordOnDrop {
    fn drop(&mut self) {
        if let Some(delivery) = self.delivery.take() {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.deliveries.push(delivery);
        }
    }
}
