//! Tool calls: the functions a request offers the model, how they reach the
//! prompt, the constraint that makes every call valid, and reading the calls
//! back out of the generated text.
//!
//! This module owns the tool *format*, shared by the OpenAI and Ollama
//! endpoints (which own only their JSON shapes).
//!
//! ## How tools reach the prompt
//!
//! A chat template that knows tools (its source mentions `tools`, as
//! Qwen's, Llama 3.1's or Hermes' do) gets them as its `tools` variable, with
//! the messages' `tool_calls` (arguments as objects) and `tool_call_id`s, and
//! renders them its own way. Neither default model's template does (SmolLM2's
//! renders only roles and contents; the Gemma 3 file carries no template and
//! gets the ChatML fallback), so for them hearth uses this **fallback
//! format**, documented in the README too:
//!
//! - the functions go into the system message (appended to the caller's, or
//!   as a new first message) as a block: a sentence saying functions are
//!   available, one line per function with its JSON
//!   `{"name": …, "description": …, "parameters": {JSON schema}}`, and the
//!   instruction to call one by answering
//!   `<tool_call>\n{"name": "…", "arguments": {…}}\n</tool_call>`;
//! - an assistant turn that made calls is rendered as its text followed by
//!   one such `<tool_call>` block per call;
//! - a tool's result (`role: "tool"`) becomes a user turn holding
//!   `<tool_response>\n{"name": …, "content": …}\n</tool_response>`, and the
//!   results of consecutive tool messages share one user turn, so templates
//!   that insist on alternating roles accept the conversation.
//!
//! ## Valid by construction
//!
//! The generation is constrained (a Lark grammar for `hearth-sample`'s
//! llguidance engine) built from the tools:
//! - `required`, or a named function: the whole output is one call,
//!   `<tool_call>\n` + a JSON object `{"name": <one of the functions>,
//!   "arguments": <valid against that function's parameters>}` + `\n</tool_call>`;
//! - `auto`: either free text (which may not begin with `<` or white space,
//!   so it cannot be a malformed call) or one such call;
//! - `none`: no tools in the prompt and no constraint: plain text.
//!
//! So the arguments of every call parse and validate against the function's
//! schema; a schema the engine cannot compile is a 400 naming the tool.

use hearth_runtime::{ConstraintSpec, Message, Runtime};
use serde_json::{json, Value};

use crate::api::error::ApiError;

pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

/// One function a request offers.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// A JSON schema for the arguments object.
    pub parameters: Value,
}

/// What the model may or must do with the tools.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    Auto,
    None,
    Required,
    Named(String),
}

/// A call: read back from the output, or from an assistant turn of the
/// conversation so far.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One conversation turn with what tool calling adds to a message.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    pub role: String,
    pub content: String,
    /// Calls an assistant turn made.
    pub calls: Vec<Call>,
    /// For a tool's result: the call it answers, and the function's name.
    pub call_id: Option<String>,
    pub name: Option<String>,
}

impl Turn {
    pub fn plain(role: impl Into<String>, content: impl Into<String>) -> Turn {
        Turn {
            role: role.into(),
            content: content.into(),
            ..Turn::default()
        }
    }
}

/// The conversation as the fallback format writes it (see the module docs):
/// plain messages for any template.
pub fn fallback_messages(turns: &[Turn], tools: &[Function], choice: &Choice) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    // Whether the last message pushed holds tool results (so the next result joins it).
    let mut results_open = false;
    for (i, t) in turns.iter().enumerate() {
        if t.role == "tool" {
            let name = t.name.clone().or_else(|| {
                let id = t.call_id.as_deref()?;
                turns[..i]
                    .iter()
                    .flat_map(|p| &p.calls)
                    .find(|c| c.id == id)
                    .map(|c| c.name.clone())
            });
            let r = render_result(name.as_deref(), &t.content);
            match out.last_mut() {
                Some(last) if results_open => {
                    last.content.push('\n');
                    last.content.push_str(&r);
                }
                _ => out.push(Message::new("user", r)),
            }
            results_open = true;
            continue;
        }
        results_open = false;
        if t.calls.is_empty() {
            out.push(Message::new(t.role.clone(), t.content.clone()));
            continue;
        }
        let mut content = t.content.trim().to_string();
        for c in &t.calls {
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&render_call(&c.name, &c.arguments));
        }
        out.push(Message::new(t.role.clone(), content));
    }
    if !tools.is_empty() && *choice != Choice::None {
        let block = system_block(tools, choice);
        match out.first_mut() {
            Some(first) if first.role == "system" => {
                first.content.push_str("\n\n");
                first.content.push_str(&block);
            }
            _ => out.insert(0, Message::new("system", block)),
        }
    }
    out
}

/// The conversation in OpenAI's message form, for templates that render
/// tools themselves (arguments as objects, as those templates expect).
fn template_messages(turns: &[Turn]) -> Vec<Value> {
    turns
        .iter()
        .map(|t| {
            let mut v = json!({"role": t.role, "content": t.content});
            if !t.calls.is_empty() {
                v["tool_calls"] = t
                    .calls
                    .iter()
                    .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect();
            }
            if let Some(id) = &t.call_id {
                v["tool_call_id"] = json!(id);
            }
            if let Some(n) = &t.name {
                v["name"] = json!(n);
            }
            v
        })
        .collect()
}

/// The prompt tokens of a conversation with tools, through the model's
/// template where it knows tools and through the fallback format otherwise.
pub fn prompt_ids(
    rt: &Runtime,
    turns: &[Turn],
    tools: &[Function],
    choice: &Choice,
) -> Result<Vec<u32>, ApiError> {
    if !rt.template.knows_tools() {
        return Ok(rt.chat_prompt(&fallback_messages(turns, tools, choice))?);
    }
    let offered = (!tools.is_empty() && *choice != Choice::None).then(|| openai_form(tools));
    let text = rt
        .template
        .render_with_tools(&template_messages(turns), offered.as_ref(), true)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(rt.tokenize(&text, false, true)?)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Read OpenAI-form tools (`[{"type":"function","function":{…}}]`, also
/// Ollama's form). `field` is the request's name for the list.
pub fn parse_tools(v: &Value, field: &str) -> Result<Vec<Function>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::field(
            field,
            format!("`{field}` must be an array"),
        ));
    };
    let mut out: Vec<Function> = Vec::new();
    for (i, t) in items.iter().enumerate() {
        let at = |sub: &str| format!("{field}[{i}]{sub}");
        let Value::Object(t) = t else {
            return Err(ApiError::field(
                &at(""),
                format!("`{}` must be an object", at("")),
            ));
        };
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(ApiError::field(
                    &at(".type"),
                    format!("tool type {other:?} is not supported (only \"function\")"),
                ))
            }
            None => {
                return Err(ApiError::field(
                    &at(".type"),
                    format!("`{}` is required (\"function\")", at(".type")),
                ))
            }
        }
        let Some(Value::Object(f)) = t.get("function") else {
            return Err(ApiError::field(
                &at(".function"),
                format!("`{}` must be an object", at(".function")),
            ));
        };
        let name = match f.get("name") {
            Some(Value::String(n)) if valid_name(n) => n.clone(),
            Some(Value::String(n)) => {
                return Err(ApiError::field(
                    &at(".function.name"),
                    format!(
                        "function name {n:?} must be 1 to 64 letters, digits, underscores or dashes"
                    ),
                ))
            }
            _ => {
                return Err(ApiError::field(
                    &at(".function.name"),
                    format!("`{}` is required (a string)", at(".function.name")),
                ))
            }
        };
        if out.iter().any(|g| g.name == name) {
            return Err(ApiError::field(
                &at(".function.name"),
                format!("function {name:?} is defined twice"),
            ));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => {
                return Err(ApiError::field(
                    &at(".function.description"),
                    format!("`{}` must be a string", at(".function.description")),
                ))
            }
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ApiError::field(
                    &at(".function.parameters"),
                    format!(
                        "`{}` must be a JSON schema object",
                        at(".function.parameters")
                    ),
                ))
            }
        };
        if let Err(e) = ConstraintSpec::JsonSchema(parameters.clone()).check() {
            return Err(ApiError::field(
                &at(".function.parameters"),
                format!("the parameters schema of {name:?} is not supported: {e}"),
            ));
        }
        out.push(Function {
            name,
            description,
            parameters,
        });
    }
    Ok(out)
}

/// Read OpenAI's `tool_choice` (absent means `auto` when there are tools).
pub fn parse_choice(v: Option<&Value>, tools: &[Function]) -> Result<Choice, ApiError> {
    const FIELD: &str = "tool_choice";
    let choice = match v {
        None | Some(Value::Null) => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Choice::Auto,
            "none" => Choice::None,
            "required" => Choice::Required,
            other => {
                return Err(ApiError::field(
                    FIELD,
                    format!("tool_choice {other:?}: use \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": …}}}}"),
                ))
            }
        },
        Some(Value::Object(o)) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::field(
                    "tool_choice.type",
                    "tool_choice.type must be \"function\"",
                ));
            }
            let Some(name) = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            else {
                return Err(ApiError::field(
                    "tool_choice.function.name",
                    "tool_choice.function.name is required",
                ));
            };
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::field(
                    "tool_choice.function.name",
                    format!("tool_choice names function {name:?}, which is not among `tools`"),
                ));
            }
            Choice::Named(name.to_string())
        }
        Some(_) => {
            return Err(ApiError::field(
                FIELD,
                "tool_choice must be a string or an object",
            ))
        }
    };
    if tools.is_empty() && matches!(choice, Choice::Required | Choice::Named(_)) {
        return Err(ApiError::field(
            FIELD,
            "tool_choice asks for a call but `tools` is empty",
        ));
    }
    Ok(choice)
}

/// The functions in OpenAI's form, for templates that render tools.
pub fn openai_form(tools: &[Function]) -> Vec<Value> {
    tools
        .iter()
        .map(|f| {
            let mut func = json!({"name": f.name, "parameters": f.parameters});
            if let Some(d) = &f.description {
                func["description"] = json!(d);
            }
            json!({"type": "function", "function": func})
        })
        .collect()
}

/// The fallback system block listing the functions (see the module docs).
pub fn system_block(tools: &[Function], choice: &Choice) -> String {
    let mut s = String::from(
        "You can call functions to help with the user's request. The functions, with JSON schemas for their arguments:\n",
    );
    for f in tools {
        let mut v = json!({"name": f.name});
        if let Some(d) = &f.description {
            v["description"] = json!(d);
        }
        v["parameters"] = f.parameters.clone();
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s.push_str(&format!(
        "To call a function, answer with only\n{CALL_OPEN}\n{{\"name\": \"<function name>\", \"arguments\": {{<the arguments>}}}}\n{CALL_CLOSE}\n"
    ));
    s.push_str(match choice {
        Choice::Auto | Choice::None => "If no function is needed, answer the user directly.",
        Choice::Required => "You must call one of the functions.",
        Choice::Named(_) => "",
    });
    if let Choice::Named(n) = choice {
        s.push_str(&format!("You must call the function {n}."));
    }
    s
}

/// A call as the fallback format writes it.
pub fn render_call(name: &str, arguments: &Value) -> String {
    format!(
        "{CALL_OPEN}\n{}\n{CALL_CLOSE}",
        json!({"name": name, "arguments": arguments})
    )
}

/// A tool's result as the fallback format writes it.
pub fn render_result(name: Option<&str>, content: &str) -> String {
    let v = match name {
        Some(n) => json!({"name": n, "content": content}),
        None => json!({"content": content}),
    };
    format!("<tool_response>\n{v}\n</tool_response>")
}

/// The JSON layout inside a call: JSON's optional white space allowed but
/// bounded, so a small model cannot pad a call until it runs out of tokens.
fn layout() -> Value {
    json!({"whitespace_flexible": true, "whitespace_pattern": "[\\x20\\x0A\\x0D\\x09]{1,8}"})
}

/// The schema of one call's JSON object for the functions `fs`.
fn call_schema(fs: &[&Function]) -> Value {
    let one = |f: &Function| {
        json!({
            "type": "object",
            "properties": {"name": {"const": f.name}, "arguments": f.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    let mut s = if fs.len() == 1 {
        one(fs[0])
    } else {
        json!({"anyOf": fs.iter().map(|f| one(f)).collect::<Vec<_>>()})
    };
    s["x-guidance"] = layout();
    s
}

/// The constraint for a request's tools and choice (`None`: unconstrained).
pub fn constraint(tools: &[Function], choice: &Choice) -> Option<ConstraintSpec> {
    let fs: Vec<&Function> = match choice {
        Choice::None => return None,
        Choice::Named(n) => tools.iter().filter(|f| &f.name == n).collect(),
        Choice::Auto | Choice::Required => tools.iter().collect(),
    };
    if fs.is_empty() {
        return None;
    }
    let open = format!("{CALL_OPEN}\n");
    let close = format!("\n{CALL_CLOSE}");
    // Lark string literals take the escapes of Rust's debug form.
    let call = format!("call: {open:?} %json {} {close:?}", call_schema(&fs));
    let grammar = match choice {
        Choice::Auto => format!("start: call | TEXT\nTEXT: /[^<\\s][\\s\\S]*/\n{call}\n"),
        _ => format!("start: call\n{call}\n"),
    };
    Some(ConstraintSpec::Lark(grammar))
}

/// Split generated text into its plain text and the calls in it. Text
/// outside the blocks is kept (trimmed; `None` when nothing is left). A
/// block whose JSON is not a call (possible only without a constraint) is
/// left in the text.
pub fn parse_output(text: &str) -> (Option<String>, Vec<Call>) {
    let mut rest = text;
    let mut plain = String::new();
    let mut calls = Vec::new();
    while let Some(at) = rest.find(CALL_OPEN) {
        let after = &rest[at + CALL_OPEN.len()..];
        let Some(end) = after.find(CALL_CLOSE) else {
            break;
        };
        let inner = after[..end].trim();
        match serde_json::from_str::<Value>(inner) {
            Ok(Value::Object(mut o)) => match (o.remove("name"), o.remove("arguments")) {
                (Some(Value::String(name)), args) => {
                    plain.push_str(&rest[..at]);
                    calls.push(Call {
                        id: call_id(),
                        name,
                        arguments: args.unwrap_or_else(|| json!({})),
                    });
                }
                _ => plain.push_str(&rest[..at + CALL_OPEN.len() + end + CALL_CLOSE.len()]),
            },
            _ => plain.push_str(&rest[..at + CALL_OPEN.len() + end + CALL_CLOSE.len()]),
        }
        rest = &after[end + CALL_CLOSE.len()..];
    }
    plain.push_str(rest);
    let plain = plain.trim();
    ((!plain.is_empty()).then(|| plain.to_string()), calls)
}

/// Whether streamed text so far may still turn out to be a call (so it is
/// held back rather than sent as content).
pub fn may_be_call(text_so_far: &str) -> bool {
    let t = text_so_far.trim_start();
    t.is_empty() || CALL_OPEN.starts_with(t) || t.starts_with(CALL_OPEN)
}

/// A new id for a call.
pub fn call_id() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("call_{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {
            "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}])
    }

    #[test]
    fn tools_are_checked_and_name_the_field() {
        assert_eq!(
            parse_tools(&weather(), "tools").unwrap()[0].name,
            "get_weather"
        );
        let bad = |v: Value| parse_tools(&v, "tools").unwrap_err().param.unwrap();
        assert_eq!(bad(json!({})), "tools");
        assert_eq!(bad(json!([{"type": "retrieval"}])), "tools[0].type");
        assert_eq!(bad(json!([{"type": "function"}])), "tools[0].function");
        assert_eq!(
            bad(json!([{"type": "function", "function": {"name": "a b"}}])),
            "tools[0].function.name"
        );
        assert_eq!(
            bad(
                json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}])
            ),
            "tools[1].function.name"
        );
        assert_eq!(
            bad(json!([{"type": "function", "function": {"name": "f", "parameters": 3}}])),
            "tools[0].function.parameters"
        );
    }

    #[test]
    fn choices() {
        let tools = parse_tools(&weather(), "tools").unwrap();
        assert_eq!(parse_choice(None, &tools).unwrap(), Choice::Auto);
        assert_eq!(
            parse_choice(Some(&json!("required")), &tools).unwrap(),
            Choice::Required
        );
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        assert_eq!(
            parse_choice(Some(&named), &tools).unwrap(),
            Choice::Named("get_weather".into())
        );
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        let e = parse_choice(Some(&unknown), &tools).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice.function.name"));
        assert!(e.message.contains("nope"));
        assert!(parse_choice(Some(&json!("sometimes")), &tools).is_err());
        assert!(parse_choice(Some(&json!("required")), &[]).is_err());
    }

    #[test]
    fn calls_are_read_back() {
        let a = json!({"city": "Paris"});
        let text = format!("Let me check.\n{}", render_call("get_weather", &a));
        let (plain, calls) = parse_output(&text);
        assert_eq!(plain.as_deref(), Some("Let me check."));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, a);
        let (plain, calls) = parse_output("<tool_call>\nnot json\n</tool_call>");
        assert!(calls.is_empty());
        assert!(plain.unwrap().contains("not json"));
        assert_eq!(parse_output("hello").0.as_deref(), Some("hello"));
        assert!(may_be_call("  <tool"));
        assert!(may_be_call(""));
        assert!(!may_be_call("Hi"));
    }

    #[test]
    fn fallback_renders_calls_and_results() {
        let tools = parse_tools(&weather(), "tools").unwrap();
        let call = Call {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "Oslo"}),
        };
        let turns = vec![
            Turn::plain("user", "Weather in Oslo?"),
            Turn {
                role: "assistant".into(),
                calls: vec![call],
                ..Turn::default()
            },
            Turn {
                role: "tool".into(),
                content: "sunny".into(),
                call_id: Some("call_1".into()),
                ..Turn::default()
            },
            Turn {
                role: "tool".into(),
                content: "12 C".into(),
                name: Some("get_weather".into()),
                ..Turn::default()
            },
        ];
        let m = fallback_messages(&turns, &tools, &Choice::Auto);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0].role, "system");
        assert!(m[0].content.contains("\"name\":\"get_weather\""));
        assert!(m[2].content.contains(CALL_OPEN) && m[2].content.contains("Oslo"));
        assert_eq!(m[3].role, "user");
        assert!(m[3].content.contains("sunny") && m[3].content.contains("12 C"));
        assert!(m[3].content.contains("\"name\":\"get_weather\""));
        let none = fallback_messages(&turns, &tools, &Choice::None);
        assert_eq!(none.len(), 3);
    }

    #[test]
    fn grammars_compile() {
        let tools = parse_tools(&weather(), "tools").unwrap();
        for c in [
            Choice::Auto,
            Choice::Required,
            Choice::Named("get_weather".into()),
        ] {
            let spec = constraint(&tools, &c).unwrap();
            spec.check()
                .unwrap_or_else(|e| panic!("{c:?}: {e}\n{spec:?}"));
        }
        assert!(constraint(&tools, &Choice::None).is_none());
    }
}
