//! A server on a free loopback port for the tests, over the tiny shared model.

#![allow(dead_code)]

use std::path::Path;

use shuku_infer::{Engine, EngineOptions};
use shuku_serve::{RunningServer, ServeOptions, Server};

/// A running server: its base URL; stopped (every connection closed) on drop.
pub struct Running {
    pub url: String,
    server: RunningServer,
}

impl Running {
    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

pub fn glassllm() -> std::path::PathBuf {
    shuku_testkit::shared("data/models/glassllm-en-q8_0.gguf")
}

/// Starts a server for `model` with `options` (the log goes to a temporary file).
pub async fn start(model: &Path, options: ServeOptions) -> Running {
    let engine = Engine::load(
        model,
        EngineOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .expect("load the model");
    let log = options.log_file.clone().or_else(|| {
        Some(std::env::temp_dir().join(format!("shuku-serve-test-{}.jsonl", std::process::id())))
    });
    let server = Server::new(
        engine,
        ServeOptions {
            log_file: log,
            ..options
        },
    )
    .expect("start the server")
    .spawn("127.0.0.1:0")
    .expect("listen on loopback");
    Running {
        url: server.url(),
        server,
    }
}

/// Options for a small test server.
pub fn options(parallel: usize, context: usize) -> ServeOptions {
    ServeOptions {
        model_name: "glass".into(),
        parallel,
        context,
        cache: 0,
        ..ServeOptions::default()
    }
}

/// POSTs JSON; returns status, headers and body.
pub async fn post(
    url: &str,
    body: &serde_json::Value,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, headers, v)
}

/// The `data:` payloads of a server-sent-events body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}
