//! shuku-serve: an OpenAI-compatible HTTP server over [`shuku_infer`]'s GGUF engine, for edge
//! machines that answer most requests locally and escalate the rest.
//!
//! * `POST /v1/chat/completions` and `POST /v1/completions`, streamed (server-sent events ending
//!   with `data: [DONE]`) or not, with the fields people use: `max_tokens`, `temperature`,
//!   `top_p`, `top_k`, `min_p`, `seed`, `stop`, penalties, `logprobs`, and `response_format` with
//!   a JSON schema enforced while sampling. `GET /v1/models`, `GET /health`, `GET /metrics`.
//! * [`scheduler`]: continuous batching. Concurrent requests decode together in one forward pass
//!   per step, each with its own KV cache; idle caches are reused for prompts that share a prefix;
//!   a bounded queue answers 429 with `Retry-After` when full; a client that disconnects frees its
//!   slot within one decode step; every request has a deadline.
//! * [`router`]: the hybrid edge → cloud router and the exact-response cache.
//! * [`metrics`] (Prometheus text) and [`log`] (one JSON line per request, prompts only when asked).
//! * Errors are OpenAI's error bodies with the right status ([`ApiError`]); unknown request fields
//!   are refused by name.
//!
//! ```no_run
//! use shuku_infer::{Engine, EngineOptions};
//! use shuku_serve::{ServeOptions, Server};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::load("model-Q4_K_M.gguf", EngineOptions::default())?;
//! let server = Server::new(engine, ServeOptions { parallel: 4, context: 8192, ..Default::default() })?;
//! println!("{}", server.summary());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.run(listener).await?;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod error;
pub mod log;
pub mod metrics;
pub mod prepare;
pub mod respond;
pub mod router;
pub mod scheduler;
mod server;

pub use error::{ApiError, ServeError};
pub use router::{RouterOptions, Signal};
pub use server::{RunningServer, ServeOptions, Server, ROUTE_HEADER};
