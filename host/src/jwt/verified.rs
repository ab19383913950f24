//! Tokens already verified, remembered so that a client sending the same token again
//! costs a SHA-256 and a map lookup instead of a signature check.
//!
//! Only what cannot change is remembered: a token's bytes fix its signature, `iss`, `aud`
//! and claims, so an entry keyed by the token's SHA-256 digest stands for all of that. What
//! can change is checked on every use: the time (`exp` and `nbf` against the clock, with
//! the leeway), the key set (an entry made under an older key-set generation is verified
//! again, so a key removed from the JWKS stops its tokens), and the route's scopes (checked
//! by the caller). Failed tokens are never remembered. Each authorizer has its own cache of
//! at most `token_cache` entries, in shards each behind a short mutex; a full shard drops
//! its expired entries, then everything, before taking a new one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

/// Number of independently locked shards.
const SHARDS: usize = 16;

/// What a verified token established.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The key-set generation it was verified under.
    pub generation: u64,
    /// `exp` (Unix seconds).
    pub exp: u64,
    /// `nbf` (Unix seconds), if the token has one.
    pub nbf: Option<u64>,
    pub principal: Arc<str>,
    pub claims: Arc<Map<String, Value>>,
}

impl Verified {
    /// From a token's claims as `jsonwebtoken` accepted them (`None` if `exp` or `nbf` is
    /// not a plain integer, so the token is verified every time).
    pub fn new(generation: u64, claims: Map<String, Value>) -> Option<Verified> {
        let exp = seconds(claims.get("exp")?)?;
        let nbf = match claims.get("nbf") {
            None => None,
            Some(value) => Some(seconds(value)?),
        };
        let principal = Arc::from(
            claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        Some(Verified {
            generation,
            exp,
            nbf,
            principal,
            claims: Arc::new(claims),
        })
    }

    /// Whether the token is still valid at `now` (Unix seconds) under key-set `generation`.
    pub fn is_valid(&self, generation: u64, now: u64, leeway: u64) -> bool {
        self.generation == generation
            && self.exp.saturating_add(leeway) >= now
            && self.nbf.is_none_or(|nbf| nbf <= now.saturating_add(leeway))
    }
}

/// A NumericDate as `jsonwebtoken` reads it: an integer, or a finite non-negative number
/// rounded.
fn seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let float = value.as_f64()?;
        // `as` saturates; the range check keeps it exact enough for seconds.
        (float.is_finite() && float >= 0.0 && float < u64::MAX as f64).then(|| float.round() as u64)
    })
}

/// The cache of one authorizer.
#[derive(Debug)]
pub struct VerifiedTokens {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<[u8; 32], Verified>>>,
    per_shard: usize,
}

impl VerifiedTokens {
    /// A cache of about `capacity` entries; `None` when `capacity` is 0 (every request is
    /// verified).
    pub fn new(capacity: usize) -> Option<VerifiedTokens> {
        (capacity > 0).then(|| VerifiedTokens {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        })
    }

    /// The SHA-256 digest a token is remembered under.
    pub fn digest(token: &str) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    fn shard(&self, digest: &[u8; 32]) -> Option<&Mutex<HashMap<[u8; 32], Verified>>> {
        // The modulo keeps the index below SHARDS.
        self.shards
            .get((self.hasher.hash_one(digest) % SHARDS as u64) as usize)
    }

    /// The entry for `digest`, if it is still valid.
    pub fn get(
        &self,
        digest: &[u8; 32],
        generation: u64,
        now: u64,
        leeway: u64,
    ) -> Option<Verified> {
        let shard = self
            .shard(digest)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .get(digest)
            .filter(|v| v.is_valid(generation, now, leeway))
            .cloned()
    }

    /// Remembers a verified token.
    pub fn put(&self, digest: [u8; 32], verified: Verified, now: u64, leeway: u64) {
        let Some(shard) = self.shard(&digest) else {
            return;
        };
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard {
            shard.retain(|_, v| v.exp.saturating_add(leeway) >= now);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(digest, verified);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: u64, nbf: Option<u64>) -> Verified {
        let mut claims = Map::new();
        claims.insert("exp".to_owned(), Value::from(exp));
        if let Some(nbf) = nbf {
            claims.insert("nbf".to_owned(), Value::from(nbf));
        }
        Verified::new(1, claims).expect("numeric claims")
    }

    #[test]
    fn time_and_generation_are_checked_on_every_use() {
        let v = verified(1000, Some(500));
        assert!(v.is_valid(1, 700, 0));
        assert!(v.is_valid(1, 1000, 0));
        assert!(!v.is_valid(1, 1001, 0));
        assert!(v.is_valid(1, 1030, 60));
        assert!(!v.is_valid(1, 499, 0));
        assert!(v.is_valid(1, 499, 5));
        assert!(!v.is_valid(2, 700, 0), "a newer key set verifies again");
        let mut claims = Map::new();
        claims.insert("exp".to_owned(), Value::from("1000"));
        assert!(Verified::new(1, claims).is_none());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = VerifiedTokens::new(32).expect("cache");
        for i in 0..1000u32 {
            let digest = VerifiedTokens::digest(&i.to_string());
            cache.put(digest, verified(10_000, None), 0, 0);
            assert!(cache.get(&digest, 1, 0, 0).is_some());
        }
        let total: usize = cache
            .shards
            .iter()
            .map(|s| s.lock().expect("shard").len())
            .sum();
        assert!(total <= 32 + SHARDS, "{total}");
        assert!(VerifiedTokens::new(0).is_none());
    }
}
