//! The wire formats clients speak, each translating its request into the core's request
//! ([`crate::providers::ChatRequest`]) and the core's answer and stream
//! ([`crate::chat::ChatAnswer`]) back into its own shapes — beside the outbound adapters
//! (`crate::providers`), so N client formats meet M providers through one core request.
//!
//! - [`openai_chat`]: OpenAI Chat Completions (`/v1/chat/completions`), and OpenAI's model
//!   list.
//! - [`anthropic_messages`] and [`anthropic_stream`]: the Anthropic Messages API
//!   (`/v1/messages`, `count_tokens`), its SSE event sequence and model list.
//!
//! A format never renders an error itself: a stream that ends early yields
//! [`SseFrame::Error`] with the core's error, and `http` writes it in the format's shape.

pub mod anthropic_messages;
pub mod anthropic_stream;
mod frame;
pub mod openai_chat;
pub mod openai_responses;
pub mod openai_responses_stream;

pub use frame::{FrameStream, SseFrame};
