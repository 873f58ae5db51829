//! Prometheus metrics over HTTP (`GET /metrics`), optionally behind basic
//! auth checked against an argon2 hash. Counters are read from the pinned maps
//! at scrape time, so they are monotonic across reloads and daemon restarts.
use std::{net::SocketAddr, sync::Arc};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use base64::Engine;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;

use super::{io_err, DaemonError, Shared};
use crate::{policy::BasicAuth, status::counter_rows};

type Labels = Vec<(String, String)>;

pub(super) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, DaemonError> {
    if !addr.ip().is_loopback() {
        tracing::warn!("metrics listen on {addr}, beyond loopback");
    }
    let listener =
        std::net::TcpListener::bind(addr).map_err(io_err(format!("metrics listener on {addr}")))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("metrics listener"))?;
    Ok(listener)
}

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics server stopped: {e}");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let auth = shared
        .current
        .read()
        .ok()
        .and_then(|c| c.basic_auth.clone());
    if let Some(auth) = auth {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // argon2 is deliberately slow: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || authorized(given.as_deref(), &auth))
            .await
            .unwrap_or(false);
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"portcullis\"")],
                "unauthorized\n",
            )
                .into_response();
        }
    }
    match tokio::task::spawn_blocking(move || render(&shared)).await {
        Ok(Ok(body)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Checks an `Authorization: Basic …` header against the configured user and
/// argon2 password hash.
pub fn authorized(header: Option<&str>, auth: &BasicAuth) -> bool {
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = text.split_once(':') else {
        return false;
    };
    let Ok(hash) = PasswordHash::new(&auth.password_hash) else {
        tracing::error!("metrics basic_auth password_hash is not a valid PHC string");
        return false;
    };
    user == auth.user
        && Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn render(shared: &Shared) -> Result<String, String> {
    let pins = shared.root.open().map_err(|e| e.to_string())?;
    let meta = pins.meta().map_err(|e| e.to_string())?;
    let rows = counter_rows(&meta, |slot| pins.counters(slot)).map_err(|e| e.to_string())?;
    let mut registry = Registry::default();

    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    for r in &rows {
        let l = labels(&[
            ("interface", &r.interface),
            ("zone", &r.zone),
            ("reason", &r.reason),
            ("verdict", &r.verdict),
        ]);
        packets.get_or_create(&l).inc_by(r.packets);
        bytes.get_or_create(&l).inc_by(r.bytes);
    }
    registry.register(
        "portcullis_packets",
        "Frames judged, by interface, zone, reason and verdict",
        packets,
    );
    registry.register("portcullis_bytes", "Bytes of the frames judged", bytes);

    let generation = Gauge::<i64>::default();
    generation.set(pins.generation().map_err(|e| e.to_string())? as i64);
    registry.register(
        "portcullis_policy_generation",
        "Generation of the enforced policy",
        generation,
    );

    let reloads = Family::<Labels, Counter>::default();
    reloads
        .get_or_create(&labels(&[("result", "ok")]))
        .inc_by(shared.reloads_ok.load(std::sync::atomic::Ordering::Relaxed));
    reloads
        .get_or_create(&labels(&[("result", "error")]))
        .inc_by(
            shared
                .reloads_error
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    registry.register(
        "portcullis_reloads",
        "Policy reloads since the daemon started",
        reloads,
    );

    let prefixes = Family::<Labels, Gauge>::default();
    if let Ok(c) = shared.current.read() {
        for (list, (v4, v6)) in [
            ("blocklist", c.blocklist),
            ("allow", c.allow),
            ("failsafe", c.failsafe),
        ] {
            prefixes
                .get_or_create(&labels(&[("list", list), ("family", "ipv4")]))
                .set(v4 as i64);
            prefixes
                .get_or_create(&labels(&[("list", list), ("family", "ipv6")]))
                .set(v6 as i64);
        }
    }
    registry.register(
        "portcullis_prefixes",
        "Prefixes in the enforced policy, after merging",
        prefixes,
    );

    let modes = Family::<Labels, Gauge>::default();
    for i in &meta.interfaces {
        modes
            .get_or_create(&labels(&[
                ("interface", &i.name),
                ("mode", i.mode.as_str()),
            ]))
            .set(1);
    }
    registry.register(
        "portcullis_attach_mode",
        "1 for the XDP mode each interface runs in",
        modes,
    );

    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    fn auth(password: &str) -> BasicAuth {
        let salt = SaltString::encode_b64(b"fixed test salt").unwrap();
        BasicAuth {
            user: "prom".into(),
            password_hash: Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .unwrap()
                .to_string(),
        }
    }

    fn header(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn basic_auth_accepts_only_the_right_user_and_password() {
        let a = auth("s3cret");
        assert!(authorized(Some(&header("prom", "s3cret")), &a));
        assert!(!authorized(Some(&header("prom", "wrong")), &a));
        assert!(!authorized(Some(&header("other", "s3cret")), &a));
        assert!(!authorized(None, &a));
        assert!(!authorized(Some("Bearer abc"), &a));
        assert!(!authorized(Some("Basic !!!not-base64"), &a));
    }
}
