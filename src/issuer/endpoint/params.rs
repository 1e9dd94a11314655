//! Reading the endpoints' parameters: `POST` only, a form or JSON body, capped in size and
//! read within a timeout. A parameter sent twice is malformed; one sent empty is omitted.

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body::Body;
use http_body_util::BodyExt;
use serde::Deserialize;

use super::{Limits, OAuthError};
use crate::http_util::{declares_more_than, form_decode, has_media_type, pairs};

/// The parameters both endpoints read. Unknown ones are ignored.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Params {
    pub(super) grant_type: Option<String>,
    pub(super) refresh_token: Option<String>,
    pub(super) token: Option<String>,
}

impl Params {
    /// RFC 6749 §3.2: a parameter sent without a value is treated as omitted.
    fn without_empty(self) -> Self {
        let present = |v: Option<String>| v.filter(|v| !v.is_empty());
        Self {
            grant_type: present(self.grant_type),
            refresh_token: present(self.refresh_token),
            token: present(self.token),
        }
    }
}

/// The body formats accepted.
#[derive(Debug, Clone, Copy)]
enum Format {
    Form,
    Json,
}

impl Format {
    /// The format `Content-Type` names; any other is refused.
    fn of(headers: &HeaderMap) -> Result<Self, OAuthError> {
        if has_media_type(headers, "application/x-www-form-urlencoded") {
            Ok(Self::Form)
        } else if has_media_type(headers, "application/json") {
            Ok(Self::Json)
        } else {
            Err(OAuthError::invalid_request(
                "content type must be application/x-www-form-urlencoded or application/json",
            ))
        }
    }

    fn parse(self, body: &[u8]) -> Result<Params, OAuthError> {
        let params = match self {
            // Derived deserialization refuses duplicate members and non-string values.
            Self::Json => serde_json::from_slice(body).ok(),
            Self::Form => parse_form(body),
        };
        params.ok_or(OAuthError::invalid_request("malformed request parameters"))
    }
}

const TOO_LARGE: OAuthError = OAuthError::invalid_request("request body too large");

/// Checks method and content type, reads the body within the limits, parses it.
pub(super) async fn read_params<B>(req: Request<B>, limits: Limits) -> Result<Params, OAuthError>
where
    B: Body<Data = Bytes>,
{
    if req.method() != Method::POST {
        return Err(OAuthError::method_not_allowed());
    }
    let format = Format::of(req.headers())?;
    if declares_more_than(req.headers(), limits.max_body) {
        return Err(TOO_LARGE);
    }
    let body = read_body(req.into_body(), limits).await?;
    Ok(format.parse(&body)?.without_empty())
}

/// The whole body, at most `limits.max_body` bytes, within `limits.read_timeout`.
async fn read_body<B>(body: B, limits: Limits) -> Result<Vec<u8>, OAuthError>
where
    B: Body<Data = Bytes>,
{
    let mut body = Box::pin(body);
    let mut buf = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(OAuthError::invalid_request(
                    "request body could not be read",
                ));
            };
            // Trailers carry no parameters.
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limits.max_body {
                    return Err(TOO_LARGE);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .map_err(|_| OAuthError::invalid_request("request body not received in time"))??;
    Ok(buf)
}

/// `application/x-www-form-urlencoded`; a parameter given twice is malformed (RFC 6749 §3.1).
fn parse_form(body: &[u8]) -> Option<Params> {
    let body = std::str::from_utf8(body).ok()?;
    let mut params = Params::default();
    for (key, value) in pairs(body) {
        let slot = match &*form_decode(key) {
            "grant_type" => &mut params.grant_type,
            "refresh_token" => &mut params.refresh_token,
            "token" => &mut params.token,
            _ => continue,
        };
        if slot.replace(form_decode(value).into_owned()).is_some() {
            return None;
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parameters_are_decoded_and_never_repeated() {
        let p = parse_form(b"grant_type=refresh_token&refresh_token=a%2Eb&x=1").unwrap();
        assert_eq!(p.grant_type.as_deref(), Some("refresh_token"));
        assert_eq!(p.refresh_token.as_deref(), Some("a.b"));
        assert!(parse_form(b"refresh_token=a&refresh_token=a").is_none());
        assert!(parse_form(&[0xff, b'=']).is_none());
        assert!(parse_form(b"").unwrap().refresh_token.is_none());
    }
}
