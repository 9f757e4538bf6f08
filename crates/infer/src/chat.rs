//! Chat prompts from the model's own template (`tokenizer.chat_template`, a Jinja template written
//! by the model's authors), rendered with `minijinja`.
//!
//! Hugging Face templates are Python-flavoured Jinja: they call `.strip()`, `.startswith()` and other
//! string methods (provided by `minijinja-contrib`'s Python compatibility layer), `raise_exception`
//! (defined here: it fails the render with the template's message), and read `messages`,
//! `add_generation_prompt`, `bos_token` and `eos_token`. A file without a template gets ChatML
//! ([`CHATML_TEMPLATE`]); [`ChatTemplate::is_fallback`] tells callers so they can say it.

use minijinja::{Environment, Error as JinjaError, ErrorKind};

/// ChatML, the fallback when a file has no template (as llama.cpp falls back).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others).
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with this role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a chat template could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatTemplateError {
    /// The template does not parse.
    #[error("chat template does not parse: {0}")]
    Syntax(String),
    /// The template raised an error for these messages (e.g. roles that do not alternate).
    #[error("chat template refused the conversation: {0}")]
    Raised(String),
    /// Rendering failed for another reason (unknown filter, bad operand, …).
    #[error("chat template failed to render: {0}")]
    Render(String),
}

/// A compiled chat template with the special-token strings it may use.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    fallback: bool,
}

fn raise_exception(msg: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

const RAISED: &str = "raise_exception: ";

impl ChatTemplate {
    /// Compiles `source`; `bos_token` / `eos_token` are the texts the template sees.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", |msg: String| {
            raise_exception(format!("{RAISED}{msg}"))
        });
        env.set_keep_trailing_newline(true);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            fallback: false,
        })
    }

    /// ChatML, used when a file has no template.
    pub fn chatml(bos_token: &str, eos_token: &str) -> ChatTemplate {
        let mut t = ChatTemplate::new(CHATML_TEMPLATE, bos_token, eos_token)
            .expect("the built-in ChatML template parses");
        t.fallback = true;
        t
    }

    /// Whether this is the ChatML fallback rather than the file's own template.
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; `add_generation_prompt` appends the opening of the assistant's turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| {
            let text = describe(&e);
            match text.find(RAISED) {
                Some(i) => ChatTemplateError::Raised(
                    text[i + RAISED.len()..]
                        .split(" (in chat:")
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ),
                None if e.kind() == ErrorKind::SyntaxError => ChatTemplateError::Syntax(text),
                None => ChatTemplateError::Render(text),
            }
        })
    }
}

/// An error with its causes, on one line.
fn describe(e: &JinjaError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

impl crate::Engine {
    /// The file's chat template (`tokenizer.chat_template`), or ChatML when it has none (see
    /// [`ChatTemplate::is_fallback`]). `bos_token` / `eos_token` are the texts of the model's
    /// BOS and EOS tokens.
    pub fn chat_template(&self) -> Result<ChatTemplate, ChatTemplateError> {
        let tok = self.tokenizer();
        let text = |id: Option<u32>| {
            id.and_then(|i| tok.token_text(i))
                .unwrap_or_default()
                .to_string()
        };
        let (bos, eos) = (text(tok.bos()), text(tok.eos()));
        match self
            .file()
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
        {
            Some(src) => ChatTemplate::new(src, &bos, &eos),
            None => Ok(ChatTemplate::chatml(&bos, &eos)),
        }
    }

    /// Renders `messages` with [`Engine::chat_template`](crate::Engine::chat_template).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.chat_template()?
            .render(messages, add_generation_prompt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as stored in its GGUF.
    pub const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// Llama 3 Instruct's template.
    const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    /// Gemma 3's template (instruction-tuned models).
    const GEMMA3: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"#;

    /// Phi-3 mini's template, as stored in its GGUF: no system role, and the assistant's opening
    /// follows every user turn whether or not a generation prompt is asked for.
    const PHI3: &str = r#"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}"#;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("user", "Hi!"),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", " How are you? "),
        ]
    }

    #[test]
    fn chatml_of_smollm2_adds_its_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap();
        let s = t.render(&conversation(), true).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n\
             <|im_start|>user\n How are you? <|im_end|>\n<|im_start|>assistant\n"
        );
        let mut with_system = vec![ChatMessage::new("system", "Be brief.")];
        with_system.extend(conversation().into_iter().take(1));
        let s = t.render(&with_system, false).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        );
    }

    #[test]
    fn llama3_uses_bos_and_trims() {
        let t = ChatTemplate::new(LLAMA3, "<|begin_of_text|>", "<|eot_id|>").unwrap();
        let s = t.render(&conversation(), true).unwrap();
        assert_eq!(
            s,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn gemma3_folds_the_system_prompt_and_checks_alternation() {
        let t = ChatTemplate::new(GEMMA3, "<bos>", "<eos>").unwrap();
        let mut msgs = vec![ChatMessage::new("system", "Be brief.")];
        msgs.extend(conversation());
        let s = t.render(&msgs, true).unwrap();
        assert_eq!(
            s,
            "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n\
             <start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"
        );
        let bad = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        match t.render(&bad, true) {
            Err(ChatTemplateError::Raised(m)) => {
                assert!(m.starts_with("Conversation roles must alternate"), "{m}")
            }
            other => panic!("expected a raised error, got {other:?}"),
        }
    }

    #[test]
    fn phi3_renders_user_and_assistant_turns() {
        let t = ChatTemplate::new(PHI3, "<s>", "<|endoftext|>").unwrap();
        let mut msgs = vec![ChatMessage::new("system", "Be brief.")];
        msgs.extend(conversation());
        let expected = "<s><|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n\
                        <|user|>\n How are you? <|end|>\n<|assistant|>\n";
        assert_eq!(t.render(&msgs, true).unwrap(), expected);
        assert_eq!(t.render(&msgs, false).unwrap(), expected);
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.content.strip().upper() }}{% if m.role.startswith('us') %}!{% endif %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&conversation(), false).unwrap(),
            "HI!!HELLO.HOW ARE YOU?!"
        );
    }

    #[test]
    fn broken_templates_are_typed_errors() {
        assert!(matches!(
            ChatTemplate::new("{% for m in messages %}", "", ""),
            Err(ChatTemplateError::Syntax(_))
        ));
        let t = ChatTemplate::new("{{ messages | no_such_filter }}", "", "");
        match t {
            Err(ChatTemplateError::Syntax(_)) => {}
            Ok(t) => assert!(matches!(
                t.render(&conversation(), true),
                Err(ChatTemplateError::Render(_) | ChatTemplateError::Syntax(_))
            )),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn chatml_fallback_is_marked() {
        let t = ChatTemplate::chatml("", "");
        assert!(t.is_fallback());
        assert_eq!(
            t.render(&conversation()[..1], true).unwrap(),
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
