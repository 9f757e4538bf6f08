//! The hybrid router between two servers on loopback: the edge answers locally, escalates on
//! request, on a prompt longer than its context and on low confidence, caches exact repeats, and
//! keeps answering when the upstream is down.

mod common;

use std::time::Duration;

use common::{glassllm, options, post, sse_data, start};
use serde_json::{json, Value};
use shuku_serve::{RouterOptions, ServeOptions, Signal};

fn edge(upstream: &str, escalate_below: Option<f32>, cache: usize) -> ServeOptions {
    ServeOptions {
        model_name: "edge".into(),
        cache,
        router: Some(RouterOptions {
            url: upstream.to_string(),
            api_key: None,
            model: None,
            escalate_below,
            signal: Signal::MeanLogprob,
            timeout: Duration::from_secs(30),
        }),
        // 256 positions per slot: long prompts do not fit.
        ..options(2, 512)
    }
}

fn ask(content: &str) -> Value {
    json!({"messages": [{"role": "user", "content": content}], "max_tokens": 16, "temperature": 0})
}

async fn route_of(url: &str, body: &Value) -> (String, Value) {
    let (status, headers, v) = post(url, body).await;
    assert_eq!(status, 200, "{v}");
    let route = v["shuku"]["route"].as_str().unwrap().to_string();
    assert_eq!(headers["x-shuku-route"], route.as_str());
    (route, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_escalates_caches_and_survives_the_upstream() {
    let upstream = start(
        &glassllm(),
        ServeOptions {
            model_name: "upstream".into(),
            ..options(2, 4096)
        },
    )
    .await;
    let confident = start(&glassllm(), edge(&upstream.url, Some(-100.0), 16)).await;
    let doubtful = start(&glassllm(), edge(&upstream.url, Some(0.0), 0)).await;
    let chat = |s: &common::Running| s.at("/v1/chat/completions");

    // Answered locally, then from the cache.
    let (route, v) = route_of(&chat(&confident), &ask("And God said")).await;
    assert_eq!(route, "local");
    assert_eq!(v["model"], "edge");
    assert!(v["shuku"]["confidence"].as_f64().unwrap() < 0.0);
    let (route, again) = route_of(&chat(&confident), &ask("And God said")).await;
    assert_eq!(route, "cache");
    assert_eq!(
        again["choices"][0]["message"]["content"],
        v["choices"][0]["message"]["content"]
    );

    // Asked for.
    let r = reqwest::Client::new()
        .post(chat(&confident))
        .header("x-shuku-route", "upstream")
        .json(&ask("The Lord is my shepherd"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["shuku"]["route"], "upstream", "{v}");
    assert_eq!(v["model"], "upstream");

    // Longer than the edge's context.
    let long = ask(&"Blessed are the meek ".repeat(60));
    let (route, v) = route_of(&chat(&confident), &long).await;
    assert_eq!(route, "upstream");
    assert!(v["shuku"]["reason"].as_str().unwrap().contains("positions"));

    // Low confidence (every answer is under a threshold of 0), streamed to the client.
    let mut streamed = ask("In the beginning");
    streamed["stream"] = json!(true);
    let r = reqwest::Client::new()
        .post(chat(&doubtful))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-shuku-route"], "upstream");
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(last["shuku"]["reason"]
        .as_str()
        .unwrap()
        .contains("low confidence"));

    // The upstream goes away: the edge still answers what it can, and says so.
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (route, v) = route_of(&chat(&doubtful), &ask("Let there be light")).await;
    assert_eq!(route, "local");
    assert!(
        v["shuku"]["reason"]
            .as_str()
            .unwrap()
            .contains("upstream unavailable"),
        "{v}"
    );
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    // What the edge cannot hold fails with the context error, naming the upstream's failure.
    let (status, _, v) = post(&chat(&doubtful), &long).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(v["error"]["message"].as_str().unwrap().contains("upstream"));
}
