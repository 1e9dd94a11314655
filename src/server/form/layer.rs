//! [`FormTokenLayer`]: the configuration of [`FormToken`].

use std::time::Duration;

use tower_layer::Layer;

use crate::server::form::FormToken;

/// Layers [`FormToken`]. The default body limit is 64 KiB, and the default read timeout 10 s.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::post};
/// use tower::ServiceBuilder;
/// use tower_jwt_refresh::keys::{Algorithm, Key};
/// use tower_jwt_refresh::server::{FormTokenLayer, JwtAuthLayer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = Key::hmac(Algorithm::HS256, [7u8; 32])?;
/// let app: Router = Router::new().route("/submit", post(|| async { "ok" })).layer(
///     ServiceBuilder::new()
///         .layer(FormTokenLayer::new())
///         .layer(JwtAuthLayer::new(key).token_from_form()),
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FormTokenLayer {
    pub(super) limit: usize,
    pub(super) read_timeout: Duration,
}

impl Default for FormTokenLayer {
    fn default() -> Self {
        Self {
            limit: 64 * 1024,
            read_timeout: Duration::from_secs(10),
        }
    }
}

impl FormTokenLayer {
    /// A layer buffering form bodies of up to 64 KiB, for at most 10 s.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest form body searched, in bytes; a larger one counts as unreadable.
    #[must_use]
    pub fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes;
        self
    }

    /// How long reading a form body may take before it counts as unreadable.
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }
}

impl<S> Layer<S> for FormTokenLayer {
    type Service = FormToken<S>;

    fn layer(&self, inner: S) -> FormToken<S> {
        FormToken::new(inner, *self)
    }
}
