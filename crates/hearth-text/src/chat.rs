//! Chat templates: turning a conversation into the prompt text a model was
//! trained on.
//!
//! This module owns: rendering `tokenizer.chat_template` (a Jinja template
//! written for Python's `jinja2`) with minijinja, configured the way
//! llama.cpp's template engine runs it (`trim_blocks` and `lstrip_blocks` on,
//! Python string methods such as `.strip()` and `.startswith()` available,
//! `raise_exception`), and the ChatML fallback llama.cpp uses for models that
//! carry no template.

use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::TextError;
use crate::tokenizer::Tokenizer;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// A model's chat template, ready to render.
pub struct ChatTemplate {
    /// `None` means the ChatML fallback.
    env: Option<Environment<'static>>,
    source: Option<String>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token`/`eos_token` are the texts the template
    /// sees under those names.
    pub fn new(
        source: &str,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate, TextError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(TEMPLATE_NAME.to_string(), source.to_string())
            .map_err(template_error)?;
        Ok(ChatTemplate {
            env: Some(env),
            source: Some(source.to_string()),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The ChatML format llama.cpp falls back to:
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
    /// `<|im_start|>assistant\n` when a generation prompt is asked for.
    pub fn chatml() -> ChatTemplate {
        ChatTemplate {
            env: None,
            source: None,
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    /// The template in `tokenizer.chat_template`, or ChatML when the file has
    /// none. BOS/EOS texts come from the file's vocabulary.
    pub fn from_gguf(f: &hearth_gguf::GgufFile) -> Result<ChatTemplate, TextError> {
        let Some(v) = f.get("tokenizer.chat_template") else {
            return Ok(ChatTemplate::chatml());
        };
        let source = v.as_str().ok_or_else(|| {
            TextError::Template(format!(
                "tokenizer.chat_template is a {}, expected a string",
                v.type_name()
            ))
        })?;
        let text_of = |key: &str| -> String {
            let Some(id) = f.get(key).and_then(|v| v.as_u64()) else {
                return String::new();
            };
            f.get("tokenizer.ggml.tokens")
                .and_then(|t| t.as_array())
                .and_then(|t| t.get(id as usize))
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string()
        };
        ChatTemplate::new(
            source,
            text_of("tokenizer.ggml.bos_token_id"),
            text_of("tokenizer.ggml.eos_token_id"),
        )
    }

    /// A template with BOS/EOS texts taken from an already-built tokeniser.
    pub fn with_tokenizer(
        source: Option<&str>,
        tok: &Tokenizer,
    ) -> Result<ChatTemplate, TextError> {
        let text = |id: Option<u32>| {
            id.and_then(|i| tok.token_text(i))
                .unwrap_or_default()
                .to_string()
        };
        match source {
            Some(s) => ChatTemplate::new(s, text(tok.bos()), text(tok.eos())),
            None => Ok(ChatTemplate::chatml()),
        }
    }

    /// The template source (`None` for the ChatML fallback).
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Whether this is the built-in ChatML fallback.
    pub fn is_chatml_fallback(&self) -> bool {
        self.env.is_none()
    }

    /// Renders the conversation. Errors raised by the template
    /// (`raise_exception`) or by rendering carry the template's message.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        let Some(env) = &self.env else {
            let mut out = String::new();
            for m in messages {
                out.push_str("<|im_start|>");
                out.push_str(&m.role);
                out.push('\n');
                out.push_str(&m.content);
                out.push_str("<|im_end|>\n");
            }
            if add_generation_prompt {
                out.push_str("<|im_start|>assistant\n");
            }
            return Ok(out);
        };
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(template_error)?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(template_error)
    }
}

impl ChatTemplate {
    /// Whether the template renders tools itself (its source uses a
    /// `tools` variable, as tool-calling models' templates do).
    pub fn knows_tools(&self) -> bool {
        self.source.as_deref().is_some_and(|s| s.contains("tools"))
    }

    /// Renders messages of any shape (tool-calling templates read fields
    /// such as `tool_calls` and `tool_call_id`) with `tools` in the context.
    /// The ChatML fallback knows no tools and renders roles and contents.
    pub fn render_with_tools<M: Serialize, T: Serialize>(
        &self,
        messages: &[M],
        tools: Option<&T>,
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        let Some(env) = &self.env else {
            let plain: Vec<Message> = messages
                .iter()
                .map(|m| {
                    let v = Value::from_serialize(m);
                    let field = |k: &str| {
                        v.get_attr(k)
                            .ok()
                            .and_then(|x| x.as_str().map(str::to_string))
                            .unwrap_or_default()
                    };
                    Message::new(field("role"), field("content"))
                })
                .collect();
            return self.render(&plain, add_generation_prompt);
        };
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(template_error)?;
        tmpl.render(minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(template_error)
    }
}

fn template_error(e: minijinja::Error) -> TextError {
    let mut msg = match e.detail() {
        Some(d) => d.to_string(),
        None => e.to_string(),
    };
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (template line {line})"));
    }
    TextError::Template(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::chatml();
        let out = t.render(&[Message::new("user", "hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t.render(&[Message::new("user", "hi")], false).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n");
    }

    #[test]
    fn python_methods_and_variables() {
        let src = "{{ bos_token }}{% for m in messages %}{{ m.role.upper() }}:{{ m.content.strip() }}{% if m.content.startswith(' ') %}!{% endif %}\n{% endfor %}{{ eos_token }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let out = t.render(&[Message::new("user", "  hi ")], false).unwrap();
        // trim_blocks eats the newline after `{% endif %}`, as in jinja2.
        assert_eq!(out, "<s>USER:hi!</s>");
    }

    #[test]
    fn trim_and_lstrip_blocks() {
        let src = "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(
            t.render(&[Message::new("u", "a"), Message::new("u", "b")], false)
                .unwrap(),
            "a\nb\n"
        );
    }

    #[test]
    fn raise_exception_message_surfaces() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let err = t
            .render(&[Message::new("assistant", "x")], false)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Conversation must start with user"),
            "{err}"
        );
        assert_eq!(t.render(&[Message::new("user", "x")], false).unwrap(), "ok");
    }

    #[test]
    fn tools_reach_templates_that_know_them() {
        let src = "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}[{{ c.function.name }}({{ c.function.arguments.city }})]{% endfor %}{% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert!(t.knows_tools());
        assert!(!ChatTemplate::chatml().knows_tools());
        let msgs = vec![
            serde_json::json!({"role": "user", "content": "weather?"}),
            serde_json::json!({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {"city": "Oslo"}}}]}),
        ];
        let tools = vec![serde_json::json!({"type": "function", "function": {"name": "w"}})];
        let out = t.render_with_tools(&msgs, Some(&tools), false).unwrap();
        // trim_blocks eats the newline after each block tag, as in jinja2.
        assert_eq!(out, "TOOLS:w;user:weather?assistant:[w(Oslo)]");
    }

    #[test]
    fn syntax_errors_are_errors() {
        let err = ChatTemplate::new("{% for %}", "", "").unwrap_err();
        assert!(matches!(err, TextError::Template(_)));
    }
}
