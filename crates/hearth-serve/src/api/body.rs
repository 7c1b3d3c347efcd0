//! Reading a JSON request body so that a wrong type is a 400 that names the
//! field (`messages[1].content`), not a generic parse failure.
//!
//! Unknown fields are ignored by the request types themselves (no
//! `deny_unknown_fields`), as OpenAI's and Ollama's servers do.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::{ApiError, OllamaError};

/// Request bodies are small (a chat of a few thousand tokens); this bounds
/// what one request can make the daemon hold.
pub const MAX_BODY: usize = 16 << 20;

pub struct JsonBody<T>(pub T);

/// Read one request type out of an already parsed body, naming the field at
/// fault. Request types that share fields are read this way from one
/// [`Value`](serde_json::Value) rather than through `#[serde(flatten)]`,
/// which would hide the field's path.
pub fn from_value<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid request: {inner}"))
        } else {
            ApiError::field(&path, format!("invalid value for `{path}`: {inner}"))
        }
    })
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the request body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request: {inner}"))
        } else {
            ApiError::field(&path, format!("invalid value for `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(e.status(), format!("could not read the request body: {e}"))
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// The same, with errors in Ollama's form.
pub struct OllamaBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OllamaBody<T> {
    type Rejection = OllamaError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(v) = JsonBody::from_request(req, state).await?;
        Ok(OllamaBody(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct R {
        model: String,
        temperature: Option<f32>,
        messages: Vec<M>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct M {
        content: String,
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse::<R>(br#"{"model":"m","temperature":"hot","messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"), "{}", e.message);
        let e = parse::<R>(br#"{"model":"m","messages":[{"content":1}]}"#).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].content"),
            "{}",
            e.message
        );
        let e = parse::<R>(br#"{"model":"m","#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse::<R>(br#"{"messages":[]}"#).unwrap_err();
        assert!(e.message.contains("model"), "{}", e.message);
        let e = parse::<R>(b"").unwrap_err();
        assert!(e.message.contains("empty"), "{}", e.message);
        // Unknown fields are ignored.
        assert!(parse::<R>(br#"{"model":"m","messages":[],"user":"x"}"#).is_ok());
    }
}
