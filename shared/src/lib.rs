//! Switchboard's domain library (`switchboard-core`): configuration, database access and
//! migrations, gateway API keys, key material, and the HTTP plumbing every function shares.
//! Functions (`functions/*`) only extract, delegate to this crate, and answer.

pub mod admin;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod breaker;
pub mod catalog;
pub mod chat;
pub mod config;
pub mod credentials;
pub mod db;
pub mod health;
pub mod http;
pub mod inbound;
pub mod keys;
pub mod ledger;
pub mod local_failure;
pub mod metrics;
pub mod otel;
pub mod providers;
pub mod report;
pub mod responses;
pub mod routing;
pub mod secret;
pub mod ssrf;
pub mod state;
pub mod telemetry;
pub mod timing;
pub mod tokens;
