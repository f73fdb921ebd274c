//! Money in and out: Stripe Checkout top-ups ([`stripe`]), and the export of every capture
//! to Lago ([`export`]), through Lago's batch events API ([`lago`]).
//!
//! Each capture writes one `billing_events` row in its own transaction (the outbox). An
//! export pass sends the unbilled rows, oldest first, in batches of at most 100, and sets
//! `billed_at` only after Lago answered 2xx: at least once, never lost. A batch is read
//! `FOR UPDATE SKIP LOCKED` and kept locked while it is sent, so two exporters at once
//! never send the same event; Lago deduplicates on `transaction_id` if a reply is lost.

pub mod export;
pub mod lago;
pub mod stripe;

pub use export::{
    BacklogView, ExportError, ExportReport, FailedEvent, backlog, export_once, requeue_failed,
};
