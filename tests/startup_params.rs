//! Start-up parameters as drivers send them, and every spelling of
//! `client_encoding`, judged the way PostgreSQL judges them. PostgreSQL
//! itself is the oracle: for each spelling it says which encoding it means
//! (`pg_char_to_encoding`, a direct login, a `SET`), and the firewall must let
//! through exactly the spellings PostgreSQL reads as UTF8 and refuse the rest.

mod common;

use common::*;

/// Spellings worth asking about: UTF-8 in the forms drivers and people
/// write it, near misses, other encodings, PostgreSQL's length limit, and
/// seeded variations with punctuation and case thrown in.
fn spellings() -> Vec<String> {
    let mut out: Vec<String> = [
        "UTF8",
        "utf8",
        "utf-8",
        "UTF-8",
        "utf_8",
        "Utf8",
        "'utf-8'",
        "\"utf8\"",
        "unicode",
        "UNICODE",
        "Unicode",
        "uni-code",
        "u t f 8",
        " utf8 ",
        "utf\u{e9}8",
        "\u{ff35}\u{ff34}\u{ff26}\u{ff18}",
        "utf16",
        "utf-16",
        "UTF-32",
        "utf8mb4",
        "utf",
        "utf88",
        "unicode8",
        "latin1",
        "'LATIN1'",
        "iso-8859-1",
        "sql_ascii",
        "SQL_ASCII",
        "sjis",
        "win1252",
        "koi8",
        "mule_internal",
        "euc_jp",
        "ucs2",
        "default",
        "auto",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // PostgreSQL cuts the value to 63 bytes (on a character boundary)
    // before it looks.
    out.push(format!("utf8{}", "-".repeat(59)));
    out.push(format!("utf8{}", "-".repeat(300)));
    out.push(format!("{}utf8", "-".repeat(59)));
    out.push(format!("{}utf8", "-".repeat(60)));
    out.push(format!("{}utf8-16", "'".repeat(59)));
    out.push(format!("{}utf8\u{e9}", "-".repeat(58)));
    out.push(format!("{}utf8", "\u{e9}".repeat(30)));
    out.push(format!("{}utf8", "\u{e9}".repeat(31)));
    // A small deterministic generator (no dependency): punctuation between
    // letters, random case, sometimes a letter dropped or doubled.
    let mut seed: u64 = 0x5eed_1705;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let punct = [" ", "-", "_", ".", "'", "\"", "/", ":", "(", "", "", ""];
    for base in ["utf8", "unicode", "latin1", "utf16"] {
        for _ in 0..12 {
            let mut s = String::new();
            for c in base.chars() {
                match next(10) {
                    0 => {}
                    1 => {
                        s.push(c);
                        s.push(c);
                    }
                    _ if next(2) == 0 => s.push(c.to_ascii_uppercase()),
                    _ => s.push(c),
                }
                s.push_str(punct[next(punct.len() as u64) as usize]);
            }
            out.push(s);
        }
    }
    out
}

/// What PostgreSQL makes of each spelling as a `client_encoding`: the
/// value it then reports (`UTF8`, `LATIN1`, the `UNICODE` it echoes), or ""
/// where it refuses it. Asked through `set_config(…, true)` on a plain
/// connection as the upstream owner role, so PostgreSQL's own check runs on
/// the whole text; `pg_char_to_encoding()` would not do, since its argument
/// is a `name`, cut to 63 bytes before the check.
async fn postgres_encodings(names: &[String]) -> Vec<String> {
    let cfg = format!(
        "host=127.0.0.1 port={} user=app_owner password={} dbname=app",
        cluster().port,
        owner_password()
    );
    let (client, conn) = tokio_postgres::connect(&cfg, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL directly");
    tokio::spawn(conn);
    let stmt = client
        .prepare("SELECT set_config('client_encoding', $1, true)")
        .await
        .unwrap();
    let mut out = Vec::new();
    for n in names {
        // Local to the statement's own transaction: the session stays UTF8.
        out.push(match client.query_one(&stmt, &[n]).await {
            Ok(row) => row.get(0),
            Err(e) => {
                let code = sqlstate(&e);
                assert!(matches!(code.as_str(), "22023" | "0A000"), "{n:?}: {e}");
                String::new()
            }
        });
    }
    out
}

fn owner_password() -> String {
    cluster()
        .passwords
        .iter()
        .find(|(r, _)| r == "app_owner")
        .expect("app_owner's password")
        .1
        .clone()
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_spellings_are_the_ones_postgres_reads_as_utf8() {
    let names = spellings();
    let theirs = postgres_encodings(&names).await;
    let mut utf8 = 0;
    for (name, pg) in names.iter().zip(&theirs) {
        let pg_utf8 = pg == "UTF8" || pg == "UNICODE";
        utf8 += usize::from(pg_utf8);
        assert_eq!(
            infraveil::classify::names_utf8(name),
            pg_utf8,
            "{name:?}: PostgreSQL reads it as {pg:?}"
        );
    }
    // The list exercises both answers, not just one.
    assert!(
        utf8 > 20 && names.len() - utf8 > 20,
        "{utf8} of {}",
        names.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_client_encoding_is_judged_as_postgres_judges_it() {
    let db = fresh_db("startup_enc");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let pg_port = cluster().port;
    let owner = owner_password();
    // Logins are slow (SCRAM); a sample of the spellings, asyncpg's first.
    // (An empty value is not a parameter pgwire's decoder accepts.)
    let names: Vec<String> = [
        "'utf-8'",
        "UTF8",
        "utf-8",
        "UNICODE",
        "unicode",
        "Utf_8",
        "\"utf8\"",
        " utf8 ",
        "LATIN1",
        "'latin1'",
        "sql_ascii",
        "utf-16",
        "bogus",
        "auto",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("utf8{}", "-".repeat(100)),
        format!("{}utf8", "-".repeat(60)),
    ])
    .collect();
    for name in &names {
        let param = [("client_encoding", name.as_str())];
        let direct = Raw::login_params(pg_port, "app_owner", &db, &owner, &param).await;
        let through = Raw::login_params(p.port, "alice", &db, PASSWORD, &param).await;
        match direct {
            Ok((_, status)) if infraveil::classify::names_utf8(&status["client_encoding"]) => {
                let (mut raw, theirs) = through
                    .unwrap_or_else(|e| panic!("{name:?}: PostgreSQL says UTF8, refused {e:?}"));
                // What PostgreSQL reports (`UTF8`, or the `UNICODE` it
                // echoes) reaches the client unchanged.
                assert_eq!(
                    theirs["client_encoding"], status["client_encoding"],
                    "{name:?}"
                );
                let (_, codes, _) = raw.pipeline_query("SELECT 'ünïcödé'").await;
                assert!(codes.is_empty(), "{name:?}: {codes:?}");
            }
            // psql under a C locale: PostgreSQL would not convert, and a
            // UTF8 database reads the same bytes as UTF8 does.
            Ok((_, status)) if status["client_encoding"] == "SQL_ASCII" => {
                let (mut raw, theirs) = through.unwrap_or_else(|e| {
                    panic!("{name:?}: PostgreSQL says SQL_ASCII, refused {e:?}")
                });
                assert_eq!(theirs["client_encoding"], "UTF8", "{name:?}");
                let (_, codes, _) = raw.pipeline_query("SELECT 'ünïcödé'").await;
                assert!(codes.is_empty(), "{name:?}: {codes:?}");
            }
            direct => {
                let direct = direct.map(|(_, status)| status);
                let Err(codes) = through else {
                    panic!("{name:?}: PostgreSQL reads {direct:?}, yet let through")
                };
                assert_eq!(codes, ["0A000"], "{name:?} (PostgreSQL: {direct:?})");
            }
        }
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_client_encoding_is_judged_as_postgres_judges_it() {
    let db = fresh_db("set_enc");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let names = spellings();
    let theirs = postgres_encodings(&names).await;
    let c = p.connect("alice", &db).await;
    for (name, pg) in names.iter().zip(&theirs) {
        let lit = sql_literal(name);
        for sql in [
            format!("SET client_encoding = {lit}"),
            format!("SET NAMES {lit}"),
            format!("SELECT set_config('client_encoding', {lit}, false)"),
        ] {
            let result = c.batch_execute(&sql).await;
            if pg == "UTF8" || pg == "UNICODE" {
                result.unwrap_or_else(|e| panic!("{sql}: PostgreSQL reads UTF8, yet {e:?}"));
            } else {
                let e = result.expect_err(&sql);
                assert_eq!(sqlstate(&e), "42501", "{sql} (PostgreSQL: {pg:?}): {e:?}");
            }
        }
    }
    // Reported back as `UNICODE`, and the session goes on.
    c.batch_execute("SET client_encoding = 'UNICODE'")
        .await
        .unwrap();
    assert_eq!(
        scalar::<String>(&c, "SHOW client_encoding").await,
        "UNICODE"
    );
    for sql in ["RESET client_encoding", "SET client_encoding TO DEFAULT"] {
        c.batch_execute(sql).await.unwrap();
    }
    assert_eq!(scalar::<String>(&c, "SHOW client_encoding").await, "UTF8");
    p.shutdown().await;
}

/// The parameters each driver sends by default (from its source), through
/// the firewall; each arrives as the driver meant it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_startup_parameters_are_forwarded() {
    let db = fresh_db("driver_params");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
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
            "node-postgres",
            &[
                ("client_encoding", "utf8"),
                ("application_name", "api"),
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
        (
            "libpq",
            &[("application_name", "psql"), ("client_encoding", "UTF8")],
        ),
    ];
    for (driver, sent) in drivers {
        let (mut raw, status) = Raw::login_params(p.port, "alice", &db, PASSWORD, sent)
            .await
            .unwrap_or_else(|e| panic!("{driver}: {e:?}"));
        assert_eq!(status["client_encoding"], "UTF8", "{driver}");
        for (k, v) in sent.iter() {
            if k.eq_ignore_ascii_case("client_encoding") {
                continue;
            }
            let (_, codes, _) = raw.pipeline_query(&format!("SHOW {k}")).await;
            assert!(codes.is_empty(), "{driver}: SHOW {k}: {codes:?}");
            if let Some(reported) = status.get(*k) {
                // PostgreSQL reports these as it normalises them.
                let same = match *k {
                    "DateStyle" => reported.starts_with("ISO"),
                    _ => reported == v,
                };
                assert!(same, "{driver}: {k} = {reported:?}, sent {v:?}");
            }
        }
    }
    // libpq's `fallback_application_name`, sent raw, which PostgreSQL itself
    // refuses at startup: it names the application when nothing else does.
    let (_, status) = Raw::login_params(
        p.port,
        "alice",
        &db,
        PASSWORD,
        &[("fallback_application_name", "nightly-job")],
    )
    .await
    .expect("a fallback application name is accepted");
    assert_eq!(status["application_name"], "nightly-job");
    // standard_conforming_strings spelled as PostgreSQL's booleans allow;
    // PostgreSQL reports it back as `on`.
    for on in ["yes", "t", "1", "ON"] {
        let (_, status) = Raw::login_params(
            p.port,
            "alice",
            &db,
            PASSWORD,
            &[("standard_conforming_strings", on)],
        )
        .await
        .unwrap_or_else(|e| panic!("standard_conforming_strings={on}: {e:?}"));
        assert_eq!(status["standard_conforming_strings"], "on", "{on}");
    }
    p.shutdown().await;
}

/// psql at a terminal without a locale asks for SQL_ASCII (`auto` under
/// C); here, without a terminal, `PGCLIENTENCODING` asks the same. It
/// connects, and runs as UTF8 upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_under_a_c_locale_connects() {
    let db = fresh_db("c_locale");
    let p = Proxy::start(ProxyOptions::enforcing()).await;
    let out = tokio::process::Command::new("psql")
        .arg(p.url("alice", &db))
        .args(["-XAtc", "SHOW client_encoding", "-c", "SELECT 'ok'"])
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .env("PGCLIENTENCODING", "SQL_ASCII")
        .output()
        .await
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["UTF8", "ok"]);
    p.shutdown().await;
}
