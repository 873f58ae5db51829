//! `[crowdsec]`: where the daemon pulls CrowdSec decisions from (bouncer
//! mode, see crate::crowdsec). The key file is only named here: the daemon
//! reads it at each pull (so a rotated key is picked up) and `check` reads it
//! to report on it; compiling a policy reads no secret.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use toml_edit::TableLike;
use url::Url;

use super::diag::excerpt;
use super::parse::{Field, Walker};

pub(super) const CROWDSEC_KEYS: &[&str] = &[
    "lapi_url",
    "api_key_file",
    "poll",
    "scopes",
    "origins",
    "ca",
];

/// Decision scopes the datapath can enforce (an address or a prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    Range,
}

impl Scope {
    /// As the LAPI names it (`scopes=ip,range` in the stream query).
    pub fn query_name(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Range => "range",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrowdsecConfig {
    pub lapi_url: Url,
    /// Resolved against the policy's directory.
    pub api_key_file: PathBuf,
    pub poll: Duration,
    pub scopes: Vec<Scope>,
    /// Honoured origins (`crowdsec`, `cscli`, `CAPI`, `lists`); empty: all.
    pub origins: Vec<String>,
    /// Extra CA (PEM) for an https LAPI with a private certificate.
    pub ca: Option<PathBuf>,
}

pub const DEFAULT_POLL: Duration = Duration::from_secs(10);
const POLL_MIN: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(3600);

impl Walker<'_> {
    pub(super) fn crowdsec(
        &mut self,
        root: &dyn TableLike,
        policy_path: &Path,
    ) -> Option<CrowdsecConfig> {
        let t = self.section(root, "crowdsec")?;
        self.check_keys(t, CROWDSEC_KEYS, "in [crowdsec]");
        let section_span = root.key("crowdsec").and_then(|k| k.span());
        let dir = match policy_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        const URL_EXAMPLE: &str = "lapi_url = \"http://127.0.0.1:8080\"";
        let url = match self.string(t, "lapi_url", "crowdsec.lapi_url", URL_EXAMPLE) {
            Field::Missing => {
                self.missing(section_span.clone(), "[crowdsec]", "lapi_url", URL_EXAMPLE);
                None
            }
            Field::Bad => None,
            Field::Ok((s, span)) => match Url::parse(s) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    if u.query().is_some() || !u.username().is_empty() {
                        self.diags.at(
                            span,
                            "`crowdsec.lapi_url` carries a query or credentials",
                            Some(format!(
                                "give the LAPI's base URL only, e.g. {URL_EXAMPLE}; the key goes in api_key_file"
                            )),
                        );
                        None
                    } else {
                        Some(u)
                    }
                }
                Ok(u) => {
                    self.diags.at(
                        span,
                        format!(
                            "`crowdsec.lapi_url` must be http:// or https://, found `{}`",
                            excerpt(u.scheme())
                        ),
                        Some(format!("e.g. {URL_EXAMPLE}")),
                    );
                    None
                }
                Err(e) => {
                    self.diags.at(
                        span,
                        format!("`crowdsec.lapi_url` `{}` is not a URL ({e})", excerpt(s)),
                        Some(format!("e.g. {URL_EXAMPLE}")),
                    );
                    None
                }
            },
        };
        const KEY_EXAMPLE: &str = "api_key_file = \"/etc/portcullis/crowdsec.key\"";
        let key = match self.string(t, "api_key_file", "crowdsec.api_key_file", KEY_EXAMPLE) {
            Field::Missing => {
                self.diags.at(
                    section_span.clone(),
                    "[crowdsec] has no `api_key_file`",
                    Some(format!(
                        "`cscli bouncers add portcullis -o raw` prints a key; store it in a file \
                         readable only by root and name it, e.g. {KEY_EXAMPLE}"
                    )),
                );
                None
            }
            Field::Bad => None,
            Field::Ok((s, span)) if s.trim().is_empty() => {
                self.diags.at(
                    span,
                    "empty `crowdsec.api_key_file`",
                    Some(format!("e.g. {KEY_EXAMPLE}")),
                );
                None
            }
            Field::Ok((s, _)) => Some(dir.join(s)),
        };
        let poll = self.poll(t).unwrap_or(DEFAULT_POLL);
        let scopes = self.scopes(t);
        let origins = self.origins(t);
        let ca = match self.string(t, "ca", "crowdsec.ca", "ca = \"lapi-ca.pem\"") {
            Field::Ok((s, span)) if s.trim().is_empty() => {
                self.diags.at(
                    span,
                    "empty `crowdsec.ca`",
                    Some("name a PEM file, or remove the key".into()),
                );
                None
            }
            Field::Ok((s, _)) => Some(dir.join(s)),
            _ => None,
        };
        Some(CrowdsecConfig {
            lapi_url: url?,
            api_key_file: key?,
            poll,
            scopes: scopes?,
            origins: origins?,
            ca,
        })
    }

    fn poll(&mut self, t: &dyn TableLike) -> Option<Duration> {
        let Field::Ok((s, span)) = self.string(t, "poll", "crowdsec.poll", "poll = \"10s\"") else {
            return None;
        };
        let secs = match crate::bans::parse_ttl(s) {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                self.diags.at(
                    span,
                    format!("`crowdsec.poll` `{}` is not a duration", excerpt(s)),
                    Some("e.g. poll = \"10s\" (s, m or h)".into()),
                );
                return None;
            }
        };
        if !(POLL_MIN..=POLL_MAX).contains(&secs) {
            self.diags.at(
                span,
                format!(
                    "`crowdsec.poll` {} s is out of range (1 s to 1 h)",
                    secs.as_secs()
                ),
                Some(
                    "the LAPI is polled this often; 10s is CrowdSec's own bouncers' default".into(),
                ),
            );
            return None;
        }
        Some(secs)
    }

    fn scopes(&mut self, t: &dyn TableLike) -> Option<Vec<Scope>> {
        let entries = match self.strings(
            t,
            "scopes",
            "crowdsec.scopes",
            "scopes = [\"ip\", \"range\"]",
        ) {
            Field::Missing => return Some(vec![Scope::Ip, Scope::Range]),
            Field::Bad => return None,
            Field::Ok(e) => e,
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (s, span) in entries {
            let scope = match s.to_ascii_lowercase().as_str() {
                "ip" => Scope::Ip,
                "range" => Scope::Range,
                _ => {
                    self.diags.at(
                        span,
                        format!("`crowdsec.scopes`: `{}` cannot be enforced at the NIC", excerpt(s)),
                        Some(
                            "portcullis bans addresses and prefixes: scopes are \"ip\" and \"range\" \
                             (decisions on countries, AS numbers or users are skipped and counted)"
                                .into(),
                        ),
                    );
                    ok = false;
                    continue;
                }
            };
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        if ok && out.is_empty() {
            self.diags.at(
                t.get("scopes").and_then(|i| i.span()),
                "`crowdsec.scopes` is empty: no decision would be honoured",
                Some("remove the key for both, or scopes = [\"ip\"]".into()),
            );
            ok = false;
        }
        ok.then_some(out)
    }

    fn origins(&mut self, t: &dyn TableLike) -> Option<Vec<String>> {
        let entries = match self.strings(
            t,
            "origins",
            "crowdsec.origins",
            "origins = [\"crowdsec\", \"cscli\"]",
        ) {
            Field::Missing => return Some(Vec::new()),
            Field::Bad => return None,
            Field::Ok(e) => e,
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (s, span) in entries {
            let bad = s.is_empty()
                || s.len() > 32
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if bad {
                self.diags.at(
                    span,
                    format!("`crowdsec.origins`: `{}` is not an origin", excerpt(s)),
                    Some(
                        "origins are names such as \"crowdsec\", \"cscli\", \"CAPI\" or \"lists\""
                            .into(),
                    ),
                );
                ok = false;
            } else if !out.iter().any(|o: &String| o == s) {
                out.push(s.to_string());
            }
        }
        ok.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{compile_str, Diagnostic};
    use super::*;

    const HEAD: &str = "version = 1\n[crowdsec]\n";

    fn compiled(body: &str) -> CrowdsecConfig {
        compile_str(
            &format!("{HEAD}{body}"),
            Path::new("/etc/portcullis/p.toml"),
        )
        .expect("compiles")
        .crowdsec
        .expect("a [crowdsec] section")
    }

    fn one_error(body: &str) -> Diagnostic {
        let text = format!("{HEAD}{body}");
        match compile_str(&text, Path::new("p.toml")) {
            Ok(_) => panic!("expected an error:\n{text}"),
            Err(e) => {
                let all: Vec<Diagnostic> = e.iter().cloned().collect();
                assert_eq!(all.len(), 1, "{all:?}");
                all[0].clone()
            }
        }
    }

    const OK: &str = "lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"crowdsec.key\"\n";

    #[test]
    fn a_minimal_section_pulls_ip_and_range_decisions_of_every_origin_every_10_s() {
        let c = compiled(OK);
        assert_eq!(c.lapi_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(c.api_key_file, Path::new("/etc/portcullis/crowdsec.key"));
        assert_eq!(c.poll, DEFAULT_POLL);
        assert_eq!(c.scopes, [Scope::Ip, Scope::Range]);
        assert!(c.origins.is_empty() && c.ca.is_none());
        let c = compiled(&format!("{OK}poll = \"2m\"\nscopes = [\"Ip\"]\norigins = [\"crowdsec\", \"cscli\"]\nca = \"/etc/ssl/lapi.pem\"\n"));
        assert_eq!(c.poll, Duration::from_secs(120));
        assert_eq!(c.scopes, [Scope::Ip]);
        assert_eq!(c.origins, ["crowdsec", "cscli"]);
        assert_eq!(c.ca.as_deref(), Some(Path::new("/etc/ssl/lapi.pem")));
    }

    #[test]
    fn bad_crowdsec_settings_are_located_errors_with_a_fix() {
        let key = "api_key_file = \"k\"\n";
        let url = "lapi_url = \"http://127.0.0.1:8080\"\n";
        let cases: &[(String, usize, &str, &str)] = &[
            (key.to_string(), 2, "has no `lapi_url`", "lapi_url ="),
            (
                url.to_string(),
                2,
                "has no `api_key_file`",
                "cscli bouncers add",
            ),
            (
                format!("lapi_url = \"ftp://h\"\n{key}"),
                3,
                "must be http:// or https://",
                "e.g.",
            ),
            (
                format!("lapi_url = \"not a url\"\n{key}"),
                3,
                "is not a URL",
                "e.g.",
            ),
            (
                format!("lapi_url = \"http://h/?api_key=x\"\n{key}"),
                3,
                "carries a query",
                "api_key_file",
            ),
            (
                format!("{url}{key}poll = \"0s\"\n"),
                5,
                "is not a duration",
                "poll =",
            ),
            (
                format!("{url}{key}poll = \"2h\"\n"),
                5,
                "out of range",
                "10s",
            ),
            (
                format!("{url}{key}poll = \"fortnightly\"\n"),
                5,
                "is not a duration",
                "poll =",
            ),
            (
                format!("{url}{key}scopes = [\"country\"]\n"),
                5,
                "cannot be enforced",
                "\"ip\"",
            ),
            (
                format!("{url}{key}scopes = []\n"),
                5,
                "is empty",
                "remove the key",
            ),
            (
                format!("{url}{key}origins = [\"a b\"]\n"),
                5,
                "is not an origin",
                "CAPI",
            ),
            (
                format!("{url}{key}api_url = \"x\"\n"),
                5,
                "api_url",
                "lapi_url",
            ),
        ];
        for (body, line, msg, help) in cases {
            let d = one_error(body);
            assert_eq!(d.line, *line, "{body}: {d:?}");
            assert!(d.message.contains(msg), "{body}: {d:?}");
            let h = d.help.clone().unwrap_or_default();
            assert!(
                h.contains(help) || d.message.contains(help),
                "{body}: {d:?}"
            );
        }
    }
}
