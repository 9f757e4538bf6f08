//! The OpenAI API of `shuku serve` on the tiny shared model: answers, streaming, logprobs,
//! schemas, continuous batching against requests served alone, the queue's 429, a disconnected
//! client freeing its slot, prefix reuse, and every kind of bad input answered with the right
//! status and an OpenAI error body while the server keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::{glassllm, options, post, sse_data, start};
use serde_json::{json, Value};

fn chat(content: &str, max_tokens: u64) -> Value {
    json!({
        "model": "glass",
        "messages": [{"role": "system", "content": "You speak like the King James Bible."},
                     {"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_stream_and_logprobs() {
    let s = start(&glassllm(), options(2, 1024)).await;
    let (status, headers, v) = post(&s.at("/v1/chat/completions"), &chat("And God said", 24)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["x-shuku-route"], "local");
    assert_eq!(v["object"], "chat.completion");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.is_empty());
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 24);
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        prompt_tokens + 24
    );

    // Streamed: the deltas add up to the same text, the last chunk carries usage, then [DONE].
    let mut req = chat("And God said", 24);
    req["stream"] = json!(true);
    let r = reqwest::Client::new()
        .post(s.at("/v1/chat/completions"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["usage"]["completion_tokens"], 24);
    assert!(
        last["shuku"]["reused_prompt_tokens"].as_u64().unwrap() > 0,
        "the second request reuses the first one's prefix: {last}"
    );

    // Chat logprobs: one entry per token, the top alternatives sorted.
    let mut req = chat("And God said", 8);
    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(3);
    let (_, _, v) = post(&s.at("/v1/chat/completions"), &req).await;
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 8);
    for c in content {
        let top = c["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], c["token"]);
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
    }

    // Completions with legacy logprobs and a stop string.
    let (status, _, v) = post(
        &s.at("/v1/completions"),
        &json!({"prompt": "In the beginning", "max_tokens": 12, "temperature": 0, "logprobs": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 12);
    assert_eq!(lp["text_offset"][0], 0);
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    let stop = text.split_whitespace().nth(2).unwrap().to_string();
    let (_, _, v) = post(
        &s.at("/v1/completions"),
        &json!({"prompt": "In the beginning", "max_tokens": 12, "temperature": 0, "stop": [stop.clone()]}),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let cut = v["choices"][0]["text"].as_str().unwrap();
    assert!(
        !cut.contains(&stop) && text.starts_with(cut),
        "{cut:?} / {text:?}"
    );

    // A JSON schema the tiny vocabulary can write (it has no quotes): an array of numbers.
    let (status, _, v) = post(
        &s.at("/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": "Numbers:"}], "temperature": 0, "max_tokens": 64,
                "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema":
                    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 1, "maxItems": 3}}}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let doc: Vec<u32> =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!((1..=3).contains(&doc.len()) && doc.iter().all(|&n| n <= 99));

    let models: Value = reqwest::get(s.at("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "glass");
    let health: Value = reqwest::get(s.at("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["slots"], 2);
    assert!(health["slot_kv_cache_bytes"].as_u64().unwrap() > 0);
    let metrics = reqwest::get(s.at("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("shuku_requests_total{endpoint=\"chat\",status=\"200\",route=\"local\"}")
    );
    assert!(metrics.contains("shuku_time_to_first_token_seconds_bucket"));
}

/// Requests decoded together give exactly what each gives alone (greedy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_equal_requests_alone() {
    let s = start(&glassllm(), options(4, 4096)).await;
    let prompts = [
        "And God said",
        "The Lord is my shepherd",
        "Blessed are the meek, for they",
        "In the beginning",
        "And the earth was without form, and void",
        "Let there be light",
    ];
    let url = s.at("/v1/completions");
    let body = |p: &str| json!({"prompt": p, "max_tokens": 40, "temperature": 0});
    let mut alone = Vec::new();
    for p in prompts {
        let (_, _, v) = post(&url, &body(p)).await;
        alone.push(v["choices"][0]["text"].as_str().unwrap().to_string());
    }
    let together = futures_util::future::join_all(prompts.iter().map(|p| {
        let url = url.clone();
        let b = body(p);
        async move { post(&url, &b).await }
    }))
    .await;
    for ((status, _, v), expected) in together.iter().zip(&alone) {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(v["choices"][0]["text"].as_str().unwrap(), expected);
    }
    let metrics = reqwest::get(s.at("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "shuku_requests_total{endpoint=\"completion\",status=\"200\",route=\"local\"} 12"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_with_retry_after() {
    let mut o = options(1, 4096);
    o.queue = 1;
    let s = start(&glassllm(), o).await;
    let url = s.at("/v1/completions");
    let body = json!({"prompt": "And God said", "max_tokens": 3000, "temperature": 0});
    let results = futures_util::future::join_all((0..8).map(|_| {
        let url = url.clone();
        let b = body.clone();
        async move {
            let t = Instant::now();
            let r = post(&url, &b).await;
            (r, t.elapsed())
        }
    }))
    .await;
    let refused: Vec<_> = results.iter().filter(|((s, _, _), _)| *s == 429).collect();
    let served = results.iter().filter(|((s, _, _), _)| *s == 200).count();
    assert!(
        served >= 1 && !refused.is_empty(),
        "served {served}, refused {}",
        refused.len()
    );
    for ((_, headers, v), took) in &refused {
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        println!("429 after {:.1} ms", took.as_secs_f64() * 1e3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_client_frees_its_slot() {
    let s = start(&glassllm(), options(1, 4096)).await;
    let body =
        json!({"prompt": "And God said", "max_tokens": 4000, "temperature": 0, "stream": true});
    let mut r = reqwest::Client::new()
        .post(s.at("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    // Read a little, then hang up.
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(r);
    let gone = Instant::now();
    loop {
        let m = reqwest::get(s.at("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("shuku_requests_cancelled 1") && m.contains("shuku_slots_busy 0") {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "slot still busy: {m}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "slot freed {:.1} ms after the disconnect",
        gone.elapsed().as_secs_f64() * 1e3
    );
    let (status, _, _) = post(
        &s.at("/v1/completions"),
        &json!({"prompt": "And", "max_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_and_an_openai_error() {
    let mut o = options(2, 512);
    o.api_key = Some("sesame".into());
    o.max_body_bytes = 4096;
    let s = start(&glassllm(), o).await;
    let client = reqwest::Client::new();
    let send = |body: String, key: Option<&'static str>| {
        let mut r = client
            .post(s.at("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v)
        }
    };
    let ok = chat("And God said", 4).to_string();
    let cases: Vec<(String, Option<&'static str>, u16, &str)> = vec![
        (ok.clone(), None, 401, "API key"),
        (ok.clone(), Some("wrong"), 401, "API key"),
        ("{\"messages\": [".into(), Some("sesame"), 400, "not valid JSON"),
        (json!({"messages": [{"role": "user", "content": "x"}], "colour": 1}).to_string(), Some("sesame"), 400, "unknown field `colour`"),
        (json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).to_string(), Some("sesame"), 400, "at least 1"),
        (json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1_000_000_000u64}).to_string(), Some("sesame"), 400, "context"),
        (json!({"messages": [{"role": "user", "content": "word ".repeat(600)}]}).to_string(), Some("sesame"), 400, "context"),
        (json!({"messages": [{"role": "user", "content": "x"}], "temperature": 7}).to_string(), Some("sesame"), 400, "temperature"),
        (json!({"messages": [{"role": "user", "content": "x"}], "n": 3}).to_string(), Some("sesame"), 400, "n = 1"),
        (json!({"messages": []}).to_string(), Some("sesame"), 400, "empty"),
        (json!({"messages": [{"role": "tool", "content": "x"}]}).to_string(), Some("sesame"), 400, "role `tool`"),
        (json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object", "required": ["a"], "properties": {}}}}}).to_string(), Some("sesame"), 400, "schema"),
        (json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}).to_string(), Some("sesame"), 400, "response_format"),
        (json!({"messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string(), Some("sesame"), 413, "larger than"),
    ];
    for (body, key, status, says) in cases {
        let (got, v) = send(body.clone(), key).await;
        assert_eq!(got, status, "{body:.80}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{body:.80}: {msg}");
        assert!(v["error"]["type"].is_string());
    }
    let r = client.get(s.at("/no/such/path")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Health needs no key; the server still answers good requests.
    assert_eq!(reqwest::get(s.at("/health")).await.unwrap().status(), 200);
    let (status, v) = send(ok, Some("sesame")).await;
    assert_eq!(status, 200, "{v}");
}
