//! Logging in: the startup parameters are vetted, the client is
//! authenticated (and audited either way), its grant checked against the
//! policy, and the session logged in upstream with the role's user.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::messages::startup::NegotiateProtocolVersion;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use crate::audit::Event;
use crate::auth;
use crate::metrics::Metrics;
use crate::net::stream::Stream;
use crate::policy::inspect::SessionInfo;
use crate::protocol::startup::StartupParams;
use crate::protocol::{self, FrameReader, PgError};
use crate::proxy::Shared;
use crate::upstream;

/// Startup parameters forwarded to PostgreSQL. Anything else is refused:
/// `options` could carry `-c role=...`, `replication` opens another protocol,
/// and a non-UTF8 `client_encoding` would let PostgreSQL read a statement
/// differently from the firewall.
const FORWARDED_PARAMS: &[&str] = &[
    "database",
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "standard_conforming_strings",
];

/// Check the startup parameters, authenticate, and log in upstream.
pub(super) async fn login(
    reader: &mut FrameReader<Stream>,
    params: &StartupParams,
    id: u64,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<(SessionInfo, upstream::Upstream), PgError> {
    let Some(user) = params.user().map(str::to_owned) else {
        return Err(PgError::no_user_name());
    };
    tracing::Span::current().record("identity", user.as_str());
    let forwarded = vet_params(params, &user)?;

    // Protocol 3.2 and `_pq_.` extensions: we speak 3.0 and say so.
    let extensions: Vec<String> = params
        .params
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .cloned()
        .collect();
    if params.minor_version > 0 || !extensions.is_empty() {
        let mut buf = BytesMut::new();
        protocol::put(&mut buf, &NegotiateProtocolVersion::new(0, extensions))?;
        reader
            .get_mut()
            .write_all(&buf)
            .await
            .map_err(|_| PgError::protocol_violation("connection lost"))?;
    }

    caught_up(shared).await?;
    let credential = authenticate(reader, id, &user, shared).await?;

    let policies = shared.policies();
    if credential.kind == auth::CredentialKind::Grant
        && let Err(why) =
            crate::grants::still_permitted(&policies, &credential.identity, &credential.role)
    {
        warn!(grant = %credential.id, %why, "grant no longer permitted by policy");
        return Err(PgError::grant_not_valid(&credential.id, why));
    }
    let Some(role) = policies.role(&credential.role) else {
        warn!(role = %credential.role, "credential names a role no policy defines");
        return Err(PgError::role_not_in_policy(&credential.role));
    };
    let upstream_user = role.upstream_user.clone();
    drop(policies);

    let mut up = shared
        .upstream
        .connect(&upstream_user, &forwarded)
        .await
        .map_err(|e| {
            if let upstream::UpstreamError::NoSuchDatabase(m) = &e {
                return PgError::no_such_database(m.clone());
            }
            Metrics::inc(&shared.metrics.upstream_errors_total);
            warn!(error = %e, "upstream connection failed");
            PgError::upstream_unreachable(e.client_detail())
        })?;
    // The names user-defined objects could take over, for this database and
    // login; fail closed if they cannot be read.
    let database = forwarded
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("database"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let objects = shared
        .catalogs
        .objects(&mut up, &database, &upstream_user)
        .await
        .map_err(|e| {
            warn!(error = %e, "reading the upstream's user-defined objects failed");
            PgError::upstream_catalog_unreadable()
        })?;

    // The classifier resolves names on the default path; a role or
    // database default set upstream (`ALTER ROLE … SET search_path`) would
    // make `orders` mean another schema's table, outside the scopes. A path
    // the client gave at start-up was vetted above.
    if !forwarded
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("search_path"))
    {
        let rows = up.simple_query("SHOW search_path").await.map_err(|e| {
            warn!(error = %e, "reading the upstream's search_path failed");
            PgError::upstream_catalog_unreadable()
        })?;
        let path = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default();
        let (class, why) = crate::classify::setting("search_path", &path);
        if class != crate::classify::Class::Read {
            warn!(%upstream_user, %database, search_path = %path, "upstream default search_path refused");
            return Err(PgError::startup_parameter_refused(format!(
                "the upstream default search_path \"{path}\" is not one infraveil inspects ({why}); reset it upstream (ALTER ROLE … RESET search_path)"
            )));
        }
    }
    let info = SessionInfo {
        id,
        identity: credential.identity,
        role: credential.role,
        credential_id: credential.id,
        client_addr: peer,
        tls: reader.get_mut().is_tls(),
        database,
        objects,
    };
    Ok((info, up))
}

/// Several instances on one control database: a grant issued or revoked
/// on another a moment ago counts here too, and an instance that lost its
/// control database lets nobody new in.
async fn caught_up(shared: &Shared) -> Result<(), PgError> {
    if shared.audit.waiting() {
        return Err(PgError::control_unavailable("it cannot take audit records"));
    }
    shared.credentials.refresh().await.map_err(|why| {
        warn!(error = %why, "could not read grants from the control database");
        PgError::control_unavailable(why)
    })
}

/// Authenticate the client as `user`, auditing the outcome either way.
async fn authenticate(
    reader: &mut FrameReader<Stream>,
    id: u64,
    user: &str,
    shared: &Arc<Shared>,
) -> Result<auth::Credential, PgError> {
    match auth::authenticate(reader, &shared.credentials, user).await {
        Ok(c) => {
            // A failed log refuses every statement of this session later.
            let _ = shared
                .audit
                .enqueue(Event::AuthSucceeded {
                    session: id,
                    identity: c.identity.clone(),
                    role: c.role.clone(),
                    grant: c.id.clone(),
                })
                .await;
            Ok(c)
        }
        Err(e) => {
            let _ = shared
                .audit
                .enqueue(Event::AuthFailed {
                    session: id,
                    user: user.to_owned(),
                    reason: e.to_string(),
                })
                .await;
            Metrics::inc(&shared.metrics.auth_failures_total);
            // The log (not the client) says which: unknown identity, wrong
            // secret, or a grant that expired or was revoked.
            info!(reason = %e, "authentication failed");
            Err(e.to_client_error(user))
        }
    }
}

/// The startup parameters to pass upstream, or why the set is refused.
fn vet_params(params: &StartupParams, user: &str) -> Result<Vec<(String, String)>, PgError> {
    let refuse = |msg: String| Err(PgError::startup_parameter_refused(msg));
    let mut out = Vec::new();
    let mut has_db = false;
    let mut fallback_name = None;
    for (k, v) in &params.params {
        let key = k.to_ascii_lowercase();
        match key.as_str() {
            "user" => continue,
            _ if key.starts_with("_pq_.") => continue,
            "replication"
                if matches!(
                    v.to_ascii_lowercase().as_str(),
                    "false" | "0" | "off" | "no"
                ) =>
            {
                continue;
            }
            // libpq's meaning, which PostgreSQL itself does not take as a
            // startup parameter (it ends the login, 42704): the application
            // name when the client gives none.
            "fallback_application_name" => {
                fallback_name = Some(v.clone());
                continue;
            }
            "options" if v.trim().is_empty() => continue,
            "options" => {
                return refuse(
                    "startup option \"options\" is not allowed through infraveil; use SET after connecting"
                        .into(),
                );
            }
            // psql under a C locale asks for SQL_ASCII, which PostgreSQL
            // does not convert: it only checks the text is valid in the
            // server's encoding. The firewall passes only UTF-8 text, so
            // the session runs as UTF8 upstream: a UTF8 database reads and
            // answers every byte the same, and any other converts as it
            // does for every client of the firewall.
            "client_encoding" if crate::classify::names_sql_ascii(v) => {
                out.push((k.clone(), "UTF8".into()));
            }
            "client_encoding" if !crate::classify::names_utf8(v) => {
                return refuse(format!(
                    "client_encoding \"{v}\" is not supported: infraveil inspects statements as UTF8"
                ));
            }
            "standard_conforming_strings" if !pg_bool_true(v) => {
                return refuse("standard_conforming_strings must be on through infraveil".into());
            }
            // The classifier resolves names on the default path; a start-up
            // path must be one `SET search_path` could use unreviewed.
            "search_path" => {
                let (class, why) = crate::classify::setting("search_path", v);
                if class != crate::classify::Class::Read {
                    return refuse(format!(
                        "startup parameter search_path \"{v}\" is not allowed through infraveil: {why}"
                    ));
                }
                out.push((k.clone(), v.clone()));
            }
            _ if FORWARDED_PARAMS.contains(&key.as_str()) => {
                has_db |= key == "database";
                out.push((k.clone(), v.clone()));
            }
            _ => {
                return refuse(format!(
                    "startup parameter \"{k}\" is not allowed through infraveil; use SET after connecting"
                ));
            }
        }
    }
    if !has_db {
        // PostgreSQL's default: the database named like the user.
        out.push(("database".into(), user.to_owned()));
    }
    if let Some(name) = fallback_name
        && !out
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("application_name"))
    {
        out.push(("application_name".into(), name));
    }
    Ok(out)
}

/// Whether PostgreSQL's boolean parser (`parse_bool`) reads `v` as true:
/// `on`, `1`, or any prefix of `true` or `yes`, in any case.
fn pg_bool_true(v: &str) -> bool {
    let v = v.to_ascii_lowercase();
    !v.is_empty() && (v == "on" || v == "1" || "true".starts_with(&v) || "yes".starts_with(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> StartupParams {
        StartupParams {
            minor_version: 0,
            params: p
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn forwards_known_params_and_defaults_database() {
        let out = vet_params(
            &params(&[
                ("user", "a"),
                ("application_name", "psql"),
                ("client_encoding", "UTF8"),
            ]),
            "a",
        )
        .unwrap();
        assert!(out.contains(&("database".into(), "a".into())));
        assert!(out.contains(&("application_name".into(), "psql".into())));
        assert!(!out.iter().any(|(k, _)| k == "user"));
    }

    /// Start-up parameters as each driver sends them by default (from their
    /// sources; `tests/clients/` connects the drivers themselves).
    #[test]
    fn forwards_what_real_drivers_send() {
        let drivers: &[(&str, &[(&str, &str)])] = &[
            ("asyncpg", &[("client_encoding", "'utf-8'")]),
            (
                "pgjdbc",
                &[
                    ("client_encoding", "UTF8"),
                    ("DateStyle", "ISO"),
                    ("TimeZone", "Europe/Berlin"),
                    ("extra_float_digits", "3"),
                    ("application_name", "PostgreSQL JDBC Driver"),
                ],
            ),
            (
                "libpq",
                &[("application_name", "psql"), ("client_encoding", "UTF8")],
            ),
            (
                "node-postgres",
                &[
                    ("client_encoding", "utf8"),
                    ("fallback_application_name", "node-postgres"),
                    ("statement_timeout", "5000"),
                    ("lock_timeout", "1000"),
                    ("idle_in_transaction_session_timeout", "60000"),
                ],
            ),
            (
                "sqlx",
                &[
                    ("DateStyle", "ISO, MDY"),
                    ("client_encoding", "UTF8"),
                    ("TimeZone", "UTC"),
                    ("extra_float_digits", "2"),
                ],
            ),
            ("old pgjdbc", &[("client_encoding", "UNICODE")]),
        ];
        for (driver, sent) in drivers {
            let mut p = vec![("user", "a"), ("database", "app")];
            p.extend_from_slice(sent);
            let out = vet_params(&params(&p), "a").unwrap_or_else(|e| panic!("{driver}: {e:?}"));
            for (k, v) in sent.iter() {
                // libpq's fallback becomes the application name.
                let k = if *k == "fallback_application_name" {
                    "application_name"
                } else {
                    k
                };
                assert!(
                    out.contains(&(k.to_string(), v.to_string())),
                    "{driver}: {k} forwarded as sent"
                );
            }
        }
        // A fallback never overrides the name the client gave.
        let p = [
            ("user", "a"),
            ("fallback_application_name", "lib"),
            ("application_name", "app"),
        ];
        let out = vet_params(&params(&p), "a").unwrap();
        assert!(out.contains(&("application_name".into(), "app".into())));
        assert!(!out.iter().any(|(_, v)| v == "lib"), "{out:?}");
    }

    #[test]
    fn standard_conforming_strings_on_is_read_as_postgres_reads_booleans() {
        for on in ["on", "ON", "true", "t", "TR", "yes", "y", "1"] {
            assert!(pg_bool_true(on), "{on}");
        }
        for off in [
            "off", "o", "false", "f", "no", "0", "", "onn", "truee", " on",
        ] {
            assert!(!pg_bool_true(off), "{off}");
        }
    }

    #[test]
    fn refuses_params_that_could_escape_inspection() {
        for bad in [
            ("options", "-c role=postgres"),
            ("client_encoding", "SJIS"),
            ("client_encoding", "'utf-16'"),
            ("role", "postgres"),
            ("session_authorization", "postgres"),
            ("standard_conforming_strings", "off"),
            ("replication", "database"),
        ] {
            let e = vet_params(&params(&[("user", "a"), bad]), "a").unwrap_err();
            assert_eq!(
                e.code,
                crate::protocol::sqlstate::FEATURE_NOT_SUPPORTED,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sql_ascii_runs_as_utf8_upstream() {
        for name in ["SQL_ASCII", "sql_ascii", "'sql-ascii'"] {
            let out =
                vet_params(&params(&[("user", "a"), ("client_encoding", name)]), "a").unwrap();
            assert!(
                out.contains(&("client_encoding".into(), "UTF8".into())),
                "{name}: {out:?}"
            );
        }
    }
}
