//! Generation on the shared glassllm model (tiny, so these run in the default test suite):
//! streaming equals greedy decoding, seeds reproduce, stop strings end the text, prefix reuse
//! evaluates less and gives the same output, chat rendering falls back to ChatML.

mod common;

use shuku_infer::{
    ChatMessage, Engine, EngineOptions, FinishReason, GenerationParams, PrefixCache, SamplerConfig,
};

fn engine() -> Engine {
    common::glassllm()
}

fn greedy(n: usize) -> GenerationParams {
    GenerationParams {
        max_tokens: n,
        sampler: SamplerConfig::greedy(),
        stop: vec![],
        seed: None,
        top_logprobs: 0,
    }
}

#[test]
fn streamed_greedy_tokens_equal_generate_greedy() {
    let e = engine();
    let prompt = e
        .tokenizer()
        .encode("The Professor said", true, true)
        .unwrap();
    let expected = e.generate_greedy(&prompt, 24).unwrap();
    let mut session = e.new_session();
    let g = e
        .generate(&mut session, prompt.as_slice(), greedy(24))
        .unwrap();
    let mut text = String::new();
    let mut g = g;
    for t in &mut g {
        text.push_str(&t.unwrap().text_piece);
    }
    let summary = g.summary().unwrap().clone();
    drop(g);
    assert_eq!(summary.tokens, expected);
    assert_eq!(summary.text, text);
    assert_eq!(text, e.tokenizer().decode(&expected));
    assert_eq!(summary.metrics.generated_tokens, expected.len());
    assert_eq!(summary.metrics.prompt_tokens, prompt.len());
    if expected.len() == 24 {
        assert_eq!(summary.finish_reason, FinishReason::Length);
    }
    // The session holds the prompt and every generated token but the last.
    assert_eq!(
        session.tokens(),
        [&prompt[..], &expected[..expected.len() - 1]].concat()
    );
}

#[test]
fn seeded_sampling_is_reproducible() {
    let e = engine();
    let run = |seed| {
        let mut s = e.new_session();
        let params = GenerationParams {
            max_tokens: 32,
            sampler: SamplerConfig {
                temperature: 1.0,
                ..SamplerConfig::default()
            },
            stop: vec![],
            seed: Some(seed),
            top_logprobs: 0,
        };
        e.generate(&mut s, "Once upon a time", params)
            .unwrap()
            .finish()
            .unwrap()
            .tokens
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn stop_strings_end_the_text_even_across_tokens() {
    let e = engine();
    let full = e
        .generate(&mut e.new_session(), "The Professor said", greedy(40))
        .unwrap()
        .finish()
        .unwrap()
        .text;
    // Stop at a piece of text that spans a token boundary when possible.
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    assert!(chars.len() > 12, "too little text: {full:?}");
    let (a, _) = chars[5];
    let (b, _) = chars[9];
    let stop = full[a..b].to_string();
    let first = full.find(&stop).unwrap();
    let params = GenerationParams {
        stop: vec![stop.clone()],
        ..greedy(40)
    };
    let mut session = e.new_session();
    let mut stream = e
        .generate(&mut session, "The Professor said", params)
        .unwrap();
    let mut streamed = String::new();
    for t in &mut stream {
        streamed.push_str(&t.unwrap().text_piece);
    }
    let g = stream.summary().unwrap();
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert_eq!(streamed, full[..first]);
    assert_eq!(g.text, streamed);
}

#[test]
fn prefix_cache_evaluates_only_the_new_part_and_matches_a_fresh_session() {
    let e = engine();
    let tok = e.tokenizer();
    let first = tok
        .encode("Alice went down the hole and", true, true)
        .unwrap();
    let second = tok
        .encode(
            "Alice went down the hole and then the Dodo said",
            true,
            true,
        )
        .unwrap();
    let mut cache = PrefixCache::new(&e);
    let a = cache
        .generate(&e, &first, greedy(8))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(a.metrics.reused_tokens, 0);
    let b = cache
        .generate(&e, &second, greedy(8))
        .unwrap()
        .finish()
        .unwrap();
    assert!(b.metrics.reused_tokens > 0);
    assert!(b.metrics.prompt_tokens < second.len());
    assert_eq!(
        b.metrics.reused_tokens + b.metrics.prompt_tokens,
        second.len()
    );
    let fresh = e
        .generate(&mut e.new_session(), second.as_slice(), greedy(8))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(b.tokens, fresh.tokens);
    assert_eq!(b.text, fresh.text);
    // The same prompt again re-evaluates one token only.
    let c = cache
        .generate(&e, &second, greedy(8))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(c.metrics.prompt_tokens, 1);
    assert_eq!(c.tokens, fresh.tokens);
}

#[test]
fn empty_prompt_and_zero_tokens() {
    let e = engine();
    let mut s = e.new_session();
    assert!(e.generate(&mut s, Vec::<u32>::new(), greedy(4)).is_err());
    let g = e
        .generate(&mut s, "The", greedy(0))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert!(g.tokens.is_empty());
}

#[test]
fn a_file_without_template_renders_chatml() {
    let e = engine();
    let t = e.chat_template().unwrap();
    assert!(t.is_fallback());
    let s = e
        .render_chat(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn smollm2_template_from_its_gguf_renders_chatml_with_its_system_prompt() {
    let e = Engine::load(
        common::asset_model("SmolLM2-135M-Instruct.Q4_1.gguf"),
        EngineOptions {
            threads: 2,
            context: 256,
            ..Default::default()
        },
    )
    .expect("load SmolLM2");
    let t = e.chat_template().unwrap();
    assert!(!t.is_fallback());
    let msgs = [
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "Bye"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
    // The rendered prompt tokenizes with its control tokens, and generation ends at <|im_end|>.
    let prompt = e.render_chat(&msgs[..1], true).unwrap();
    let ids = e.tokenizer().encode(&prompt, true, true).unwrap();
    let im_start = e.tokenizer().token_id("<|im_start|>").unwrap();
    assert_eq!(ids[0], im_start);
    let g = e
        .generate(&mut e.new_session(), ids, greedy(48))
        .unwrap()
        .finish()
        .unwrap();
    assert!(!g.text.contains("<|im_end|>"), "{:?}", g.text);
}

#[test]
fn constrained_generation_yields_a_valid_document_and_top_logprobs() {
    let e = engine();
    // glassllm's vocabulary has no `"`: an array of numbers is what it can write.
    let schema = r#"{"type":"array","items":{"type":"integer","minimum":0,"maximum":1000},"minItems":2,"maxItems":4}"#;
    let c = shuku_infer::JsonSchemaConstraint::new(schema, e.tokenizer()).unwrap();
    let mut s = e.new_session();
    let params = GenerationParams {
        top_logprobs: 3,
        ..greedy(200)
    };
    let mut stream = e
        .generate(&mut s, "The Professor said", params)
        .unwrap()
        .with_constraint(c);
    let mut tops = 0;
    for t in &mut stream {
        let t = t.unwrap();
        assert!(t.top_logprobs.len() <= 3);
        if !t.is_eog {
            assert_eq!(t.top_logprobs.len(), 3);
            // The constraint may forbid the model's favourite, never promote a token above it.
            assert!(t.logprob <= t.top_logprobs[0].1);
            assert!(t.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1));
            tops += 1;
        }
    }
    let g = stream.summary().unwrap();
    assert!(tops > 0);
    let v: Vec<u32> = serde_json::from_str(&g.text).expect("valid JSON");
    assert!(
        (2..=4).contains(&v.len()) && v.iter().all(|&n| n <= 1000),
        "{}",
        g.text
    );
    assert_eq!(g.finish_reason, FinishReason::EndOfGeneration);
}
