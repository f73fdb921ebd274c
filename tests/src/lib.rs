//! Test support shared by every integration test: a fresh PostgreSQL database per
//! test, a fake upstream provider server, and a moto server for the AWS paths.

pub mod fake_lago;
pub mod fake_stripe;
pub mod fake_upstream;
pub mod fake_webhook;
pub mod gateway;
pub mod moto;
pub mod test_db;
