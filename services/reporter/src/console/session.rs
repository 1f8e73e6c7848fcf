//! Signed session cookies and CSRF tokens (HMAC-SHA256 with the console key).
//!
//! Session cookie: `<hex user>.<expiry unix>.<nonce>.<mac>`; the nonce names the session in
//! the server's [`super::sessions::SessionTable`], without which the cookie counts for nothing. CSRF token:
//! `HMAC(key, "csrf|<user>|<nonce>")`, where the nonce is the session's, or — behind an
//! authenticating proxy, without a session — a random `opsmesh_csrf` cookie's. A form post
//! must carry the token and come from the console's own origin.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "opsmesh_session";
pub const CSRF_COOKIE: &str = "opsmesh_csrf";

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Keys {
    key: Vec<u8>,
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub nonce: String,
    pub expires: u64,
}

impl Keys {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    pub fn random() -> Self {
        Self::new((0..32).map(|_| rand::random::<u8>()).collect())
    }

    fn mac(&self, parts: &[&str]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b"|");
            }
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn seal(&self, user: &str, nonce: &str, expires: u64) -> String {
        let user_hex = hex::encode(user.as_bytes());
        let expiry = expires.to_string();
        let mac = self.mac(&["session", &user_hex, &expiry, nonce]);
        format!("{user_hex}.{expiry}.{nonce}.{mac}")
    }

    pub fn open(&self, cookie: &str, now: u64) -> Option<Session> {
        let mut parts = cookie.split('.');
        let (user_hex, expiry, nonce, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let expected = self.mac(&["session", user_hex, expiry, nonce]);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        let expires: u64 = expiry.parse().ok()?;
        if expires <= now {
            return None;
        }
        let user = String::from_utf8(hex::decode(user_hex).ok()?).ok()?;
        Some(Session {
            user,
            nonce: nonce.to_owned(),
            expires,
        })
    }

    pub fn csrf_token(&self, user: &str, nonce: &str) -> String {
        self.mac(&["csrf", user, nonce])
    }

    pub fn csrf_ok(&self, user: &str, nonce: &str, token: &str) -> bool {
        let expected = self.csrf_token(user, nonce);
        bool::from(expected.as_bytes().ct_eq(token.as_bytes()))
    }
}

pub fn random_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_round_trip_and_resist_tampering() {
        let keys = Keys::random();
        let cookie = keys.seal("alice@example.com", &random_nonce(), 2000);
        let session = keys.open(&cookie, 1000).unwrap();
        assert_eq!(session.user, "alice@example.com");
        assert!(keys.open(&cookie, 2000).is_none(), "expired");
        let forged = cookie.replacen(
            &hex::encode("alice@example.com"),
            &hex::encode("mallory"),
            1,
        );
        assert!(keys.open(&forged, 1000).is_none());
        assert!(Keys::random().open(&cookie, 1000).is_none(), "other key");
        let csrf = keys.csrf_token("alice@example.com", &session.nonce);
        assert!(keys.csrf_ok("alice@example.com", &session.nonce, &csrf));
        assert!(!keys.csrf_ok("mallory", &session.nonce, &csrf));
        assert!(!keys.csrf_ok("alice@example.com", "other", &csrf));
    }
}
