//! `portcullis hash-password`: the PHC string for `[metrics] basic_auth`.
//!
//! argon2id with the argon2 crate's defaults (m=19456 KiB, t=2, p=1, the
//! OWASP minimum), a random 16-byte salt. The verifier reads the parameters
//! from the string, so stronger ones set by another tool work as well.
use std::io::{BufRead, IsTerminal, Write};

use argon2::{
    password_hash::{PasswordHasher, SaltString},
    Argon2,
};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("reading the password from stdin: {0}")]
    Read(#[source] std::io::Error),
    #[error("the password is empty")]
    Empty,
    #[error("reading random bytes for the salt from /dev/urandom: {0}")]
    Random(#[source] std::io::Error),
    #[error("argon2: {0}")]
    Hash(String),
}

/// An argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password`.
pub fn hash_password(password: &[u8]) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut salt))
        .map_err(PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// One line from stdin without its line ending. On a terminal, asks on
/// stderr and turns echo off while the password is typed.
pub fn read_password() -> Result<Vec<u8>, PasswordError> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let _echo = if tty {
        eprint!("password (not echoed): ");
        let _ = std::io::stderr().flush();
        EchoOff::new()
    } else {
        None
    };
    let mut line = Vec::new();
    let read = stdin.lock().read_until(b'\n', &mut line);
    if tty {
        eprintln!();
    }
    read.map_err(PasswordError::Read)?;
    Ok(strip_line_end(line))
}

fn strip_line_end(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

/// Terminal echo turned off on stdin until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `new`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::metrics::auth::{Argon2Verifier, Auth, Verdict, Verifier};
    use crate::policy::BasicAuth;
    use base64::Engine;
    use std::sync::Arc;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}").into_bytes()
    }

    #[test]
    fn hash_password_round_trips_through_the_metrics_auth_check() {
        let phc = hash_password(b"s3cret pass").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(Argon2Verifier.verify(b"s3cret pass", &phc));
        assert!(!Argon2Verifier.verify(b"s3cret pas", &phc));
        let cfg = BasicAuth {
            user: "prom".into(),
            password_hash: phc,
        };
        let auth = Arc::new(Auth::new(
            Arc::new(Argon2Verifier),
            std::time::Duration::from_secs(5),
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ok = rt.block_on(auth.check(Some(&header("prom", "s3cret pass")), &cfg));
        assert_eq!(ok, Verdict::Allowed);
        let bad = rt.block_on(auth.check(Some(&header("prom", "wrong")), &cfg));
        assert_eq!(bad, Verdict::Denied);
    }

    #[test]
    fn each_hash_has_its_own_salt_and_empty_is_refused() {
        let a = hash_password(b"x").unwrap();
        let b = hash_password(b"x").unwrap();
        assert_ne!(a, b);
        assert!(matches!(hash_password(b""), Err(PasswordError::Empty)));
    }

    #[test]
    fn only_the_line_end_is_stripped() {
        assert_eq!(strip_line_end(b"pw \r\n".to_vec()), b"pw ");
        assert_eq!(strip_line_end(b"pw\n".to_vec()), b"pw");
        assert_eq!(strip_line_end(b" pw".to_vec()), b" pw");
    }
}
