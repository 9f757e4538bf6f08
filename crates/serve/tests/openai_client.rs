//! The official OpenAI Python client (`pip install openai`, in the assets venv) against the server
//! on SmolLM2-135M-Instruct: chat, completion, streaming, a JSON-schema response format, logprobs,
//! and the client's own error types for a wrong key and a bad field.

mod common;

use common::{options, start};
use shuku_serve::ServeOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "conformance: needs the SmolLM2 asset and `openai` in the assets venv (scripts/test.sh installs it)"]
async fn openai_python_client() {
    let model = shuku_testkit::asset("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let s = start(
        &model,
        ServeOptions {
            model_name: "smollm2".into(),
            api_key: Some("test-key".into()),
            ..options(2, 4096)
        },
    )
    .await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/openai_client.py");
    let base = format!("{}/v1", s.url);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(shuku_testkit::python())
            .arg(script)
            .env("OPENAI_BASE_URL", base)
            .env("OPENAI_API_KEY", "test-key")
            .output()
            .expect("run the venv's python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the OpenAI client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.trim_end().ends_with("ok"));
}
