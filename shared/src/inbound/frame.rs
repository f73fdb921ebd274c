//! [`SseFrame`]: one server-sent event of an answer stream, in a format's own vocabulary;
//! `http` frames and sends it.

use std::pin::Pin;

use futures_util::Stream;

use crate::chat::ChatError;

#[derive(Debug)]
pub enum SseFrame {
    /// `event: <name>` (when named) and `data: <json>`.
    Data {
        event: Option<&'static str>,
        data: String,
    },
    /// The stream ended early: an `event: error` in the format's error shape.
    Error(ChatError),
    /// OpenAI's last frame, `data: [DONE]`.
    Done,
}

impl SseFrame {
    pub fn data(value: &impl serde::Serialize) -> SseFrame {
        SseFrame::Data {
            event: None,
            data: serde_json::to_string(value).unwrap_or_else(|_| "{}".into()),
        }
    }

    pub fn event(name: &'static str, value: &impl serde::Serialize) -> SseFrame {
        SseFrame::Data {
            event: Some(name),
            data: serde_json::to_string(value).unwrap_or_else(|_| "{}".into()),
        }
    }
}

/// A format's frames, sent as they come; dropping it (the client left) drops the run's
/// stream, which tells the run to stop reading upstream.
pub type FrameStream = Pin<Box<dyn Stream<Item = SseFrame> + Send>>;
