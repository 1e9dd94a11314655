//! [`DpopNonces`]: server-provided nonces (RFC 9449 §8), stateless and shareable.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::keys::KeyError;

/// Server nonces for DPoP proofs (RFC 9449 §8 and §9): a proof must carry a recent one.
///
/// A nonce names a time window (the [`lifetime`](Self::lifetime), 2 minutes by default) and
/// carries an HMAC of it, so checking one needs no state: the nonce of the current window and
/// of the one before are accepted, which gives a nonce one to two lifetimes. Instances that
/// share the secret ([`new`](Self::new)) accept each other's nonces; [`random`](Self::random)
/// suits a single instance. The check is constant-time.
///
/// A server hands out the current nonce in a `DPoP-Nonce` response header (always, or with
/// the `use_dpop_nonce` error); clients put the latest one they saw in their proofs.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_jwt_refresh::server::dpop::DpopNonces;
///
/// let nonces = DpopNonces::new([7u8; 32])?.lifetime(Duration::from_secs(60));
/// let nonce = nonces.nonce_at(1_700_000_000);
/// assert!(nonces.is_valid(&nonce, 1_700_000_059));
/// assert!(!nonces.is_valid(&nonce, 1_700_000_200));
/// # Ok::<_, tower_jwt_refresh::keys::KeyError>(())
/// ```
#[derive(Clone)]
pub struct DpopNonces {
    mac: Hmac<Sha256>,
    lifetime: u64,
}

impl fmt::Debug for DpopNonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopNonces")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// Bytes of HMAC kept in a nonce.
const TAG: usize = 16;

impl DpopNonces {
    /// Nonces keyed by `secret` (at least 32 bytes), which every instance that should accept
    /// them shares.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        if secret.len() < 32 {
            return Err(KeyError::ShortSecret {
                len: secret.len(),
                min: 32,
            });
        }
        let mac =
            Hmac::<Sha256>::new_from_slice(secret).map_err(|_| KeyError::Malformed("hmac key"))?;
        Ok(Self { mac, lifetime: 120 })
    }

    /// Nonces keyed by a random secret: for a single instance.
    pub fn random() -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|_| KeyError::Signing("the system random generator failed".into()))?;
        Self::new(secret)
    }

    /// How long a window lasts (whole seconds, at least one); a nonce is accepted in its
    /// window and the next.
    #[must_use]
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.as_secs().max(1);
        self
    }

    /// The nonce to hand out at `unix_seconds`.
    pub fn nonce_at(&self, unix_seconds: u64) -> String {
        let window = unix_seconds / self.lifetime;
        let mut bytes = [0u8; 8 + TAG];
        bytes[..8].copy_from_slice(&window.to_be_bytes());
        bytes[8..].copy_from_slice(&self.tag(window)[..TAG]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `nonce` is one of ours, of the window at `unix_seconds` or the one before.
    pub fn is_valid(&self, nonce: &str, unix_seconds: u64) -> bool {
        let mut bytes = [0u8; 8 + TAG];
        if nonce.len() != 32 || URL_SAFE_NO_PAD.decode_slice(nonce, &mut bytes) != Ok(8 + TAG) {
            return false;
        }
        let window = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let current = unix_seconds / self.lifetime;
        if window != current && window.checked_add(1) != Some(current) {
            return false;
        }
        let mut mac = self.mac.clone();
        mac.update(b"dpop-nonce");
        mac.update(&window.to_be_bytes());
        mac.verify_truncated_left(&bytes[8..]).is_ok()
    }

    fn tag(&self, window: u64) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(b"dpop-nonce");
        mac.update(&window.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_lives_one_to_two_lifetimes() {
        let nonces = DpopNonces::new([1u8; 32])
            .unwrap()
            .lifetime(Duration::from_secs(100));
        let nonce = nonces.nonce_at(1_000);
        assert_eq!(nonces.nonce_at(1_099), nonce);
        assert!(nonces.is_valid(&nonce, 1_000));
        assert!(nonces.is_valid(&nonce, 1_199));
        assert!(!nonces.is_valid(&nonce, 1_200));
        assert!(!nonces.is_valid(&nonce, 999), "a nonce from the future");
    }

    #[test]
    fn only_the_secret_makes_nonces() {
        let a = DpopNonces::new([1u8; 32]).unwrap();
        let b = DpopNonces::new([2u8; 32]).unwrap();
        let nonce = a.nonce_at(1_000);
        assert!(!b.is_valid(&nonce, 1_000));
        // One flipped bit anywhere is refused.
        let mut bytes = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert!(
                !a.is_valid(&URL_SAFE_NO_PAD.encode(&bytes), 1_000),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        for junk in ["", "x", &"A".repeat(32), &"A".repeat(10_000), "%%%%"] {
            assert!(!a.is_valid(junk, 1_000));
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            DpopNonces::new([0u8; 31]),
            Err(KeyError::ShortSecret { len: 31, min: 32 })
        ));
        assert!(DpopNonces::random().is_ok());
    }
}
