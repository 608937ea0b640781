//! Decoding JSON into contract types with errors that say what and where: the typed
//! [`DecodeError`] with the JSON path of the problem. Used for events ([`crate::Envelope`])
//! and by the api for request bodies, so both report bad input the same way.

use serde::de::DeserializeOwned;

use crate::envelope::DecodeError;

/// Decodes a whole JSON document into `T`. Never panics: every failure is a [`DecodeError`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_at(bytes, "")
}

/// Deserializes `bytes`, reporting where in the document a failure happened (`payload.userEmail`).
///
/// Valid input (nearly all of it) takes serde_json's plain path; only a failure is decoded a
/// second time with path tracking, which costs allocations on every field.
pub(crate) fn decode_at<T: DeserializeOwned>(bytes: &[u8], base: &str) -> Result<T, DecodeError> {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = join_path(base, &err.path().to_string());
        classify(err.into_inner(), path)
    })?;
    // Trailing bytes after the document are as malformed as a missing brace.
    de.end().map_err(|err| classify(err, join_path(base, "")))?;
    Ok(value)
}

fn join_path(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest == "." || rest.is_empty()) {
        (true, true) => ".".to_owned(),
        (true, false) => rest.to_owned(),
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}.{rest}"),
    }
}

fn classify(err: serde_json::Error, path: String) -> DecodeError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => DecodeError::Syntax {
            path,
            line: err.line(),
            column: err.column(),
            message: strip_position(&err.to_string()),
        },
        Category::Data => {
            let message = strip_position(&err.to_string());
            if let Some(field) = backticked_after(&message, "unknown field `") {
                DecodeError::UnknownField {
                    path,
                    field,
                    message,
                }
            } else if let Some(field) = backticked_after(&message, "missing field `") {
                DecodeError::MissingField {
                    path,
                    field,
                    message,
                }
            } else {
                DecodeError::InvalidValue { path, message }
            }
        }
    }
}

/// serde_json appends " at line L column C" to its messages; the typed error carries the path.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message.to_owned(),
    }
}

fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.find('`').map(|end| rest[..end].to_owned())
}
