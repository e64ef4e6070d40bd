//! etcd's simple tokens: random strings mapped to a user in memory, each valid for
//! a TTL after its last use (etcd's `--auth-token-ttl`, 300 s by default), all
//! dropped when auth is disabled, a user's dropped when its password changes or it
//! is deleted.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Token {
    user: String,
    expires: Instant,
    generation: u64,
}

#[derive(Default)]
struct Tokens {
    by_token: HashMap<String, Token>,
    /// A user's token generation: bumped when its tokens are revoked.
    generations: HashMap<String, u64>,
    /// Bumped when every token is dropped (auth disabled).
    epoch: u64,
}

/// The server's simple tokens.
pub struct TokenStore {
    ttl: Duration,
    inner: Mutex<Tokens>,
    /// Numbers tokens (etcd: `<random>.<raft index>`).
    counter: AtomicU64,
}

/// Characters of a token's random part (etcd's: letters).
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Random letters for a token: 16, as etcd's simple tokens (from the kernel's
/// CSPRNG).
fn random_letters() -> String {
    let mut buf = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).is_ok();
    assert!(ok, "argus: cannot read /dev/urandom for a token");
    buf.iter().map(|b| LETTERS[usize::from(*b) % LETTERS.len()] as char).collect()
}

impl TokenStore {
    /// Tokens valid for `ttl` after their last use.
    pub fn new(ttl: Duration) -> TokenStore {
        TokenStore { ttl, inner: Mutex::default(), counter: AtomicU64::new(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new token for `user`.
    pub fn issue(&self, user: &str) -> String {
        let token = format!("{}.{}", random_letters(), self.counter.fetch_add(1, Ordering::Relaxed));
        let now = Instant::now();
        let mut t = self.lock();
        t.by_token.retain(|_, v| v.expires > now);
        let generation = generation_of(&t, user);
        t.by_token.insert(token.clone(), Token { user: user.to_string(), expires: now + self.ttl, generation });
        token
    }

    /// The user of a live `token` and its generation, the token's TTL renewed (as
    /// etcd renews a simple token on use); `None` for an unknown or expired one.
    pub fn lookup(&self, token: &str) -> Option<(String, u64)> {
        let now = Instant::now();
        let mut t = self.lock();
        let entry = t.by_token.get_mut(token)?;
        if entry.expires <= now {
            t.by_token.remove(token);
            return None;
        }
        entry.expires = now + self.ttl;
        Some((entry.user.clone(), entry.generation))
    }

    /// The current token generation of `user` (changes when its tokens are revoked).
    pub fn generation(&self, user: &str) -> u64 {
        generation_of(&self.lock(), user)
    }

    /// Drops `user`'s tokens (password changed, user deleted).
    pub fn revoke_user(&self, user: &str) {
        let mut t = self.lock();
        t.by_token.retain(|_, v| v.user != user);
        *t.generations.entry(user.to_string()).or_default() += 1;
    }

    /// Drops every token (auth disabled).
    pub fn clear(&self) {
        let mut t = self.lock();
        t.by_token.clear();
        t.epoch += 1;
    }
}

fn generation_of(t: &Tokens, user: &str) -> u64 {
    // The epoch in the high bits: clearing every token changes every generation.
    (t.epoch << 32) + t.generations.get(user).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_are_renewed_and_revoked() {
        let s = TokenStore::new(Duration::from_millis(200));
        let a = s.issue("alice");
        let b = s.issue("bob");
        assert_ne!(a, b);
        assert_eq!(s.lookup(&a).map(|x| x.0), Some("alice".to_string()));
        assert!(s.lookup("nope").is_none());
        s.revoke_user("alice");
        assert!(s.lookup(&a).is_none());
        assert!(s.lookup(&b).is_some());
        std::thread::sleep(Duration::from_millis(300));
        assert!(s.lookup(&b).is_none(), "expired");
        let c = s.issue("bob");
        let g = s.generation("bob");
        s.clear();
        assert!(s.lookup(&c).is_none());
        assert_ne!(s.generation("bob"), g);
    }
}
