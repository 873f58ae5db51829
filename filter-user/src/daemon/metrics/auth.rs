//! Basic auth for the metrics endpoint, checked against an argon2 hash.
//!
//! argon2 is slow and memory-hard on purpose, which makes it a lever for
//! whoever can reach the port. So:
//! - the user is compared in constant time, and an unknown user pays for one
//!   verification too (against a dummy hash with the configured parameters):
//!   the answer's timing does not tell which part was wrong;
//! - at most [`MAX_VERIFYING`] verifications run at once; a request waits up
//!   to [`VERIFY_WAIT`] for a turn, then gets 503 (memory stays bounded);
//! - a verified header is remembered for [`CACHE_TTL`] (at most
//!   [`CACHE_ENTRIES`]), keyed by a SHA-256 over the header and the configured
//!   user and hash: a scraper pays once a minute, and a password change
//!   invalidates at once. Failures are never cached.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use argon2::{
    password_hash::{PasswordHasher, SaltString},
    Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version,
};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::policy::BasicAuth;

/// argon2 verifications running at once.
pub const MAX_VERIFYING: usize = 2;
/// How long a request waits for a verification slot before a 503.
pub const VERIFY_WAIT: Duration = Duration::from_secs(2);
/// How long a verified header is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
pub const CACHE_ENTRIES: usize = 16;

/// The password check, replaceable in tests.
pub trait Verifier: Send + Sync {
    /// Whether `password` matches the PHC string `phc`.
    fn verify(&self, password: &[u8], phc: &str) -> bool;
    /// A PHC string with `phc`'s algorithm and parameters over a random
    /// password: what an unknown user is checked against.
    fn dummy_like(&self, phc: &str) -> Option<String>;
}

/// The real one: argon2 with the parameters the hash names.
pub struct Argon2Verifier;

impl Verifier for Argon2Verifier {
    fn verify(&self, password: &[u8], phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        // Uses the algorithm, version and cost parameters stored in `hash`.
        Argon2::default().verify_password(password, &hash).is_ok()
    }

    fn dummy_like(&self, phc: &str) -> Option<String> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
        let version = hash
            .version
            .and_then(|v| Version::try_from(v).ok())
            .unwrap_or_default();
        let params = Params::try_from(&hash).ok()?;
        // Random salt and password: the dummy must match nothing.
        let mut random = [0u8; 48];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
            .ok()?;
        let (salt, password) = random.split_at(16);
        let salt = SaltString::encode_b64(salt).ok()?;
        Argon2::new(algorithm, version, params)
            .hash_password(password, &salt)
            .ok()
            .map(|h| h.to_string())
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Every verification slot stayed busy for [`VERIFY_WAIT`].
    Busy,
}

pub struct Auth {
    verifier: Arc<dyn Verifier>,
    slots: Arc<Semaphore>,
    wait: Duration,
    cache: Mutex<Vec<([u8; 32], Instant)>>,
    /// (configured hash, its dummy).
    dummy: Mutex<Option<(String, String)>>,
    workers: Workers,
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads verifications run on. argon2's memory (m KiB per check) is
/// allocated and freed on these only: on tokio's blocking pool, many threads
/// would each keep an allocator arena of that size (see also
/// `limits::return_large_allocations`).
struct Workers {
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
}

impl Workers {
    fn start(n: usize) -> Workers {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("metrics-auth-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return, // the Auth is gone
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("metrics auth worker: {e}");
            }
        }
        Workers {
            jobs: Mutex::new(tx),
        }
    }

    /// Runs `f` on a worker; None if it could not run.
    async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.lock().ok()?.send(job).ok()?;
        rx.await.ok()
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new(Arc::new(Argon2Verifier), VERIFY_WAIT)
    }
}

/// (user, password) from an `Authorization` header of the Basic scheme
/// (the scheme name is case-insensitive, RFC 7617 / RFC 9110 §11.1).
pub fn credentials(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"portcullis metrics auth\0");
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

impl Auth {
    pub fn new(verifier: Arc<dyn Verifier>, wait: Duration) -> Auth {
        Auth {
            verifier,
            slots: Arc::new(Semaphore::new(MAX_VERIFYING)),
            wait,
            cache: Mutex::new(Vec::new()),
            dummy: Mutex::new(None),
            workers: Workers::start(MAX_VERIFYING),
        }
    }

    /// Checks an `Authorization` header value (None: absent) against `cfg`.
    pub async fn check(self: &Arc<Self>, header: Option<&[u8]>, cfg: &BasicAuth) -> Verdict {
        let Some(header) = header else {
            return Verdict::Denied;
        };
        // Malformed headers name no user: nothing to learn from their timing.
        let Some((user, password)) = credentials(header) else {
            return Verdict::Denied;
        };
        let key = digest(&[cfg.user.as_bytes(), cfg.password_hash.as_bytes(), header]);
        if self.cached(&key) {
            return Verdict::Allowed;
        }
        let Ok(Ok(permit)) =
            tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await
        else {
            return Verdict::Busy;
        };
        let this = self.clone();
        let cfg = cfg.clone();
        let ok = self
            .workers
            .run(move || {
                let _permit = permit;
                this.verify(&user, &password, &cfg)
            })
            .await
            .unwrap_or(false);
        if ok {
            self.remember(key);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    /// One argon2 verification whichever part is wrong.
    fn verify(&self, user: &[u8], password: &[u8], cfg: &BasicAuth) -> bool {
        let user_ok: bool = Sha256::digest(user)
            .ct_eq(&Sha256::digest(cfg.user.as_bytes()))
            .into();
        if user_ok {
            return self.verifier.verify(password, &cfg.password_hash);
        }
        match self.dummy_for(&cfg.password_hash) {
            Some(dummy) => {
                let _ = self.verifier.verify(password, &dummy);
            }
            None => tracing::error!("metrics basic_auth password_hash is not a valid PHC string"),
        }
        false
    }

    fn dummy_for(&self, phc: &str) -> Option<String> {
        let mut d = self.dummy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((configured, dummy)) = d.as_ref() {
            if configured == phc {
                return Some(dummy.clone());
            }
        }
        let dummy = self.verifier.dummy_like(phc)?;
        *d = Some((phc.to_string(), dummy.clone()));
        Some(dummy)
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|(_, at)| at.elapsed() < CACHE_TTL);
        c.iter()
            .fold(false, |hit, (k, _)| hit | bool::from(k.ct_eq(key)))
    }

    fn remember(&self, key: [u8; 32]) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|(k, at)| at.elapsed() < CACHE_TTL && *k != key);
        if c.len() >= CACHE_ENTRIES {
            c.remove(0); // the oldest
        }
        c.push((key, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn hash(password: &str) -> String {
        let salt = SaltString::encode_b64(b"fixed test salt").unwrap();
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn cfg(password: &str) -> BasicAuth {
        BasicAuth {
            user: "prom".into(),
            password_hash: hash(password),
        }
    }

    fn header(scheme: &str, user: &str, password: &str) -> Vec<u8> {
        format!(
            "{scheme} {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
        .into_bytes()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Counts verifications (and which hash each was against); `delay`
    /// stands in for argon2's cost.
    struct Counting {
        calls: AtomicUsize,
        against: Mutex<Vec<String>>,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        delay: Duration,
    }

    impl Counting {
        fn new(delay: Duration) -> Arc<Counting> {
            Arc::new(Counting {
                calls: AtomicUsize::new(0),
                against: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                most_at_once: AtomicUsize::new(0),
                delay,
            })
        }
    }

    impl Verifier for Counting {
        fn verify(&self, password: &[u8], phc: &str) -> bool {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.against.lock().unwrap().push(phc.to_string());
            std::thread::sleep(self.delay);
            self.running.fetch_sub(1, Ordering::SeqCst);
            phc == format!("hash-of-{}", String::from_utf8_lossy(password))
        }
        fn dummy_like(&self, phc: &str) -> Option<String> {
            Some(format!("dummy-like-{phc}"))
        }
    }

    fn fake_cfg(password: &str) -> BasicAuth {
        BasicAuth {
            user: "prom".into(),
            password_hash: format!("hash-of-{password}"),
        }
    }

    #[test]
    fn basic_auth_accepts_only_the_right_user_and_password() {
        let a = Arc::new(Auth::default());
        let c = cfg("s3cret");
        let rt = rt();
        let check = |h: Option<&[u8]>| rt.block_on(a.check(h, &c));
        assert_eq!(
            check(Some(&header("Basic", "prom", "s3cret"))),
            Verdict::Allowed
        );
        assert_eq!(
            check(Some(&header("Basic", "prom", "wrong"))),
            Verdict::Denied
        );
        assert_eq!(
            check(Some(&header("Basic", "other", "s3cret"))),
            Verdict::Denied
        );
        assert_eq!(check(None), Verdict::Denied);
        assert_eq!(check(Some(b"Bearer abc")), Verdict::Denied);
        assert_eq!(check(Some(b"Basic !!!not-base64")), Verdict::Denied);
        assert_eq!(
            check(Some(&header("Basic", "prom", "s3cret:more"))),
            Verdict::Denied
        );
    }

    #[test]
    fn the_basic_scheme_is_matched_case_insensitively() {
        for scheme in ["basic", "BASIC", "bAsIc"] {
            assert_eq!(
                credentials(&header(scheme, "prom", "pw")),
                Some((b"prom".to_vec(), b"pw".to_vec())),
                "{scheme}"
            );
        }
        assert_eq!(credentials(&header("Basicx", "prom", "pw")), None);
        assert_eq!(credentials(b"basic"), None);
        let a = Arc::new(Auth::default());
        let c = cfg("s3cret");
        assert_eq!(
            rt().block_on(a.check(Some(&header("basic", "prom", "s3cret")), &c)),
            Verdict::Allowed
        );
    }

    #[test]
    fn an_unknown_user_pays_one_verification_against_a_dummy_hash() {
        let v = Counting::new(Duration::ZERO);
        let a = Arc::new(Auth::new(v.clone(), VERIFY_WAIT));
        let c = fake_cfg("pw");
        let rt = rt();
        assert_eq!(
            rt.block_on(a.check(Some(&header("Basic", "someone", "pw")), &c)),
            Verdict::Denied
        );
        assert_eq!(v.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            v.against.lock().unwrap().as_slice(),
            ["dummy-like-hash-of-pw"]
        );
        // A wrong password for the right user: one verification too.
        assert_eq!(
            rt.block_on(a.check(Some(&header("Basic", "prom", "nope")), &c)),
            Verdict::Denied
        );
        assert_eq!(v.calls.load(Ordering::SeqCst), 2);
        // Nothing cached for failures.
        rt.block_on(a.check(Some(&header("Basic", "someone", "pw")), &c));
        assert_eq!(v.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_real_dummy_hash_has_the_configured_parameters() {
        let phc = "$argon2id$v=19$m=8192,t=3,p=2$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";
        let dummy = Argon2Verifier.dummy_like(phc).unwrap();
        let (d, p) = (
            PasswordHash::new(&dummy).unwrap(),
            PasswordHash::new(phc).unwrap(),
        );
        assert_eq!(d.algorithm, p.algorithm);
        assert_eq!(d.version, p.version);
        assert_eq!(Params::try_from(&d).unwrap(), Params::try_from(&p).unwrap());
        assert_ne!(d.salt, p.salt);
        assert!(!Argon2Verifier.verify(b"", &dummy));
    }

    #[test]
    fn verified_credentials_are_cached_until_the_hash_changes() {
        let v = Counting::new(Duration::ZERO);
        let a = Arc::new(Auth::new(v.clone(), VERIFY_WAIT));
        let rt = rt();
        let ok = header("Basic", "prom", "pw");
        let c = fake_cfg("pw");
        for _ in 0..5 {
            assert_eq!(rt.block_on(a.check(Some(&ok), &c)), Verdict::Allowed);
        }
        assert_eq!(v.calls.load(Ordering::SeqCst), 1, "four cache hits");
        // A new password hash: the old header is verified again, and fails.
        let changed = fake_cfg("new");
        assert_eq!(rt.block_on(a.check(Some(&ok), &changed)), Verdict::Denied);
        assert_eq!(v.calls.load(Ordering::SeqCst), 2);
        // The cache is bounded.
        for i in 0..(CACHE_ENTRIES * 2) {
            let pw = format!("pw{i}");
            let c = fake_cfg(&pw);
            assert_eq!(
                rt.block_on(a.check(Some(&header("Basic", "prom", &pw)), &c)),
                Verdict::Allowed
            );
        }
        assert!(a.cache.lock().unwrap().len() <= CACHE_ENTRIES);
    }

    #[test]
    fn at_most_two_verifications_run_at_once_and_the_rest_get_busy() {
        let v = Counting::new(Duration::from_millis(100));
        let a = Arc::new(Auth::new(v.clone(), Duration::from_millis(150)));
        let c = fake_cfg("pw");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let verdicts = rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..12 {
                let a = a.clone();
                let c = c.clone();
                tasks.push(tokio::spawn(async move {
                    a.check(Some(&header("Basic", "prom", "wrong")), &c).await
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        assert_eq!(v.most_at_once.load(Ordering::SeqCst), MAX_VERIFYING);
        let busy = verdicts.iter().filter(|v| **v == Verdict::Busy).count();
        let denied = verdicts.iter().filter(|v| **v == Verdict::Denied).count();
        // 150 ms of waiting fits one more round of 100 ms verifications.
        assert!(busy >= 6, "{verdicts:?}");
        assert_eq!(busy + denied, 12);
        assert_eq!(v.calls.load(Ordering::SeqCst), denied);
    }
}
