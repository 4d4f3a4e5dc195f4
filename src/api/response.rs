//! The canonical answer: a whole response ([`ChatResponse`]) and the stream of pieces it is
//! built from ([`Delta`]). Every provider's parser produces deltas; every downstream
//! encoder consumes them, so a stream and a whole answer go through the same code.

use super::Usage;
use super::request::{FunctionCall, ToolCall};

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinishReason {
    /// A natural end.
    #[default]
    Stop,
    /// One of the stop sequences (named in [`ChatResponse::stop_sequence`]).
    StopSequence,
    /// The output token cap.
    Length,
    /// The model called tools.
    ToolCalls,
    /// A safety filter or refusal.
    ContentFilter,
    /// The provider paused a long turn (Anthropic `pause_turn`).
    Paused,
}

impl FinishReason {
    /// OpenAI's `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            Self::Stop | Self::StopSequence | Self::Paused => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
        }
    }

    /// Anthropic's `stop_reason`.
    pub fn anthropic(self) -> &'static str {
        match self {
            Self::Stop => "end_turn",
            Self::StopSequence => "stop_sequence",
            Self::Length => "max_tokens",
            Self::ToolCalls => "tool_use",
            Self::ContentFilter => "refusal",
            Self::Paused => "pause_turn",
        }
    }
}

/// One piece of an answer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// The answer's id and model (first, once).
    Start {
        /// Response id.
        id: String,
        /// Model as the provider named it.
        model: String,
    },
    /// Answer text.
    Text(String),
    /// Reasoning ("thinking") text.
    Reasoning(String),
    /// The signature that authenticates the reasoning (Anthropic).
    ReasoningSignature(String),
    /// A tool call begins. `index` counts tool calls from 0.
    ToolStart {
        /// Which tool call.
        index: usize,
        /// Its id.
        id: String,
        /// The function's name.
        name: String,
    },
    /// A piece of a tool call's JSON arguments.
    ToolArgs {
        /// Which tool call.
        index: usize,
        /// The piece.
        json: String,
    },
    /// The model stopped.
    Finish {
        /// Why.
        reason: FinishReason,
        /// The stop sequence hit, if known.
        stop_sequence: Option<String>,
    },
    /// Token usage so far (the last one wins).
    Usage(Usage),
    /// The provider reported an error inside the stream.
    Error(String),
}

/// A whole answer, built from deltas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatResponse {
    /// Response id.
    pub id: String,
    /// Model.
    pub model: String,
    /// Answer text.
    pub text: String,
    /// Reasoning text.
    pub reasoning: String,
    /// Reasoning signature (Anthropic).
    pub reasoning_signature: Option<String>,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped (`None` until it has).
    pub finish: Option<FinishReason>,
    /// The stop sequence hit.
    pub stop_sequence: Option<String>,
    /// Usage.
    pub usage: Option<Usage>,
    /// An in-band error.
    pub error: Option<String>,
}

impl ChatResponse {
    /// Fold one delta in.
    pub fn apply(&mut self, d: Delta) {
        match d {
            Delta::Start { id, model } => {
                self.id = id;
                self.model = model;
            }
            Delta::Text(t) => self.text.push_str(&t),
            Delta::Reasoning(t) => self.reasoning.push_str(&t),
            Delta::ReasoningSignature(s) => self
                .reasoning_signature
                .get_or_insert_default()
                .push_str(&s),
            Delta::ToolStart { index, id, name } => {
                while self.tool_calls.len() <= index {
                    self.tool_calls.push(ToolCall {
                        id: String::new(),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: String::new(),
                            arguments: String::new(),
                        },
                    });
                }
                if let Some(c) = self.tool_calls.get_mut(index) {
                    c.id = id;
                    c.function.name = name;
                }
            }
            Delta::ToolArgs { index, json } => {
                if let Some(c) = self.tool_calls.get_mut(index) {
                    c.function.arguments.push_str(&json);
                }
            }
            Delta::Finish {
                reason,
                stop_sequence,
            } => {
                self.finish = Some(reason);
                self.stop_sequence = stop_sequence;
            }
            Delta::Usage(u) => self.usage = Some(u),
            Delta::Error(e) => self.error = Some(e),
        }
    }

    /// Build from a run of deltas.
    pub fn from_deltas(deltas: impl IntoIterator<Item = Delta>) -> Self {
        let mut r = Self::default();
        for d in deltas {
            r.apply(d);
        }
        r
    }

    /// The deltas that rebuild this answer (used to stream a whole answer).
    pub fn to_deltas(&self) -> Vec<Delta> {
        let mut out = vec![Delta::Start {
            id: self.id.clone(),
            model: self.model.clone(),
        }];
        if !self.reasoning.is_empty() {
            out.push(Delta::Reasoning(self.reasoning.clone()));
        }
        if let Some(s) = &self.reasoning_signature {
            out.push(Delta::ReasoningSignature(s.clone()));
        }
        if !self.text.is_empty() {
            out.push(Delta::Text(self.text.clone()));
        }
        for (index, c) in self.tool_calls.iter().enumerate() {
            out.push(Delta::ToolStart {
                index,
                id: c.id.clone(),
                name: c.function.name.clone(),
            });
            out.push(Delta::ToolArgs {
                index,
                json: c.function.arguments.clone(),
            });
        }
        if let Some(reason) = self.finish {
            out.push(Delta::Finish {
                reason,
                stop_sequence: self.stop_sequence.clone(),
            });
        }
        if let Some(u) = self.usage {
            out.push(Delta::Usage(u));
        }
        if let Some(e) = &self.error {
            out.push(Delta::Error(e.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_round_trip() {
        let r = ChatResponse::from_deltas([
            Delta::Start {
                id: "a".into(),
                model: "m".into(),
            },
            Delta::Text("he".into()),
            Delta::Text("llo".into()),
            Delta::ToolStart {
                index: 0,
                id: "c".into(),
                name: "f".into(),
            },
            Delta::ToolArgs {
                index: 0,
                json: "{\"a\"".into(),
            },
            Delta::ToolArgs {
                index: 0,
                json: ":1}".into(),
            },
            Delta::Finish {
                reason: FinishReason::ToolCalls,
                stop_sequence: None,
            },
            Delta::Usage(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Usage::default()
            }),
        ]);
        assert_eq!(r.text, "hello");
        assert_eq!(r.tool_calls[0].function.arguments, "{\"a\":1}");
        assert_eq!(ChatResponse::from_deltas(r.to_deltas()), r);
    }
}
