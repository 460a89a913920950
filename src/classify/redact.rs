//! Secrets out of statement text before it is logged or audited:
//! `PASSWORD '...'` (CREATE/ALTER ROLE and USER, user mappings' `password`
//! option) becomes `PASSWORD '***'`, and a literal that holds a connection
//! string's `password=` (dblink, postgres_fdw, subscriptions) becomes `'***'`.

use std::borrow::Cow;

use sqlparser::tokenizer::Token;

use super::lexer;

/// `sql` with password literals replaced. Text that cannot be tokenized
/// but mentions a password is withheld entirely.
pub fn redact(sql: &str) -> Cow<'_, str> {
    if !mentions_secret(sql) {
        return Cow::Borrowed(sql);
    }
    let Ok(tokens) = lexer::tokenize(sql) else {
        return Cow::Owned("<withheld: may hold a secret and could not be tokenized>".into());
    };
    // A statement that builds a connection string (`format('password=%s',
    // $1)`, `'password=' || x`) may carry the secret in any literal of it:
    // then every literal goes.
    let builds_conninfo = tokens.iter().any(|t| match &t.token {
        Token::SingleQuotedString(v)
        | Token::EscapedStringLiteral(v)
        | Token::NationalStringLiteral(v)
        | Token::UnicodeStringLiteral(v) => password_filled_in(v),
        Token::DollarQuotedString(d) => password_filled_in(&d.value),
        _ => false,
    });
    let mut out = String::with_capacity(sql.len());
    let mut after_password = false;
    for t in tokens {
        let token = t.token;
        match &token {
            // `PASSWORD 'x'`, and FDW options spelled `"password" 'x'`.
            Token::Word(w) if w.value.eq_ignore_ascii_case("password") => {
                after_password = true;
                out.push_str(&token.to_string());
            }
            Token::Whitespace(_) => out.push_str(&token.to_string()),
            // A routine or DO body: redact inside it, keep the rest readable.
            Token::DollarQuotedString(d)
                if !after_password && !builds_conninfo && mentions_secret(&d.value) =>
            {
                let tag = d.tag.as_deref().unwrap_or("");
                out.push_str(&format!("${tag}$"));
                out.push_str(&redact(&d.value));
                out.push_str(&format!("${tag}$"));
            }
            Token::SingleQuotedString(v)
            | Token::EscapedStringLiteral(v)
            | Token::NationalStringLiteral(v)
            | Token::UnicodeStringLiteral(v)
                if after_password || builds_conninfo || hides_secret(v) =>
            {
                after_password = false;
                out.push_str("'***'");
            }
            Token::DollarQuotedString(_) if after_password || builds_conninfo => {
                after_password = false;
                out.push_str("'***'");
            }
            _ => {
                after_password = false;
                out.push_str(&token.to_string());
            }
        }
    }
    Cow::Owned(out)
}

fn mentions_secret(text: &str) -> bool {
    text.as_bytes()
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"password"))
        || text.contains("://")
}

/// `host=db password=...`, `password = ...` or `postgres://u:...@h`: a
/// connection string with a secret in it (the whole literal goes;
/// over-redacting is the safe side).
fn conninfo_password(literal: &str) -> bool {
    let lower = literal.to_ascii_lowercase();
    let keyed = lower.match_indices("password").any(|(i, w)| {
        lower[i + w.len()..]
            .trim_start_matches(|c: char| c.is_ascii_whitespace())
            .starts_with('=')
    });
    keyed || (lower.contains("://") && lower.contains('@'))
}

/// A connection string whose password comes from elsewhere: `password=`
/// with nothing after it, or a placeholder (`%s`, `$1`, `{}`).
fn password_filled_in(literal: &str) -> bool {
    let lower = literal.to_ascii_lowercase();
    lower.match_indices("password").any(|(i, w)| {
        let rest = lower[i + w.len()..].trim_start_matches(|c: char| c.is_ascii_whitespace());
        rest.strip_prefix('=').is_some_and(|v| {
            let v = v.trim_start_matches(|c: char| c.is_ascii_whitespace());
            v.is_empty() || v.starts_with(['%', '$', '{', '\''])
        })
    })
}

/// A literal holding SQL that sets a password, as `EXECUTE` runs it inside
/// a routine body (`'ALTER ROLE x PASSWORD ''pw'''`).
fn hides_secret(literal: &str) -> bool {
    conninfo_password(literal)
        || (mentions_secret(literal) && !literal.trim().eq_ignore_ascii_case("password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_literals_are_redacted() {
        assert!(matches!(redact("SELECT 1"), Cow::Borrowed(_)));
        assert_eq!(
            redact("CREATE ROLE x LOGIN PASSWORD 'hunter2'"),
            "CREATE ROLE x LOGIN PASSWORD '***'"
        );
        assert_eq!(
            redact("alter user x with encrypted password E'sec\\'ret' valid until 'infinity'"),
            "alter user x with encrypted password '***' valid until 'infinity'"
        );
        assert_eq!(
            redact("ALTER ROLE x PASSWORD $$p'w$$"),
            "ALTER ROLE x PASSWORD '***'"
        );
        assert_eq!(
            redact("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'a', password 'b')"),
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'a', password '***')"
        );
        assert!(!redact("ALTER ROLE x PASSWORD 'unterminated").contains("unterminated"));
        assert_eq!(
            redact("SELECT dblink_connect('host=db user=u password=s3cret dbname=x')"),
            "SELECT dblink_connect('***')"
        );
        assert_eq!(
            redact("CREATE SUBSCRIPTION s CONNECTION 'host=h password=pw' PUBLICATION p"),
            "CREATE SUBSCRIPTION s CONNECTION '***' PUBLICATION p"
        );
        assert_eq!(
            redact("SELECT dblink('postgres://u:pw@h/db', 'SELECT 1')"),
            "SELECT dblink('***', 'SELECT 1')"
        );
        // Not a password: left alone.
        assert_eq!(redact("SELECT 'password'"), "SELECT 'password'");
    }

    /// The forms an adversarial review found unredacted.
    #[test]
    fn quoted_options_spaced_keys_built_strings_and_bodies() {
        let hidden = |sql: &str, secret: &str| {
            let r = redact(sql);
            assert!(!r.contains(secret), "{sql:?} → {r:?}");
            r.into_owned()
        };
        hidden(
            r#"CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'a', "password" 'sekrit')"#,
            "sekrit",
        );
        hidden(
            "SELECT dblink_connect('host=db password  = sekrit')",
            "sekrit",
        );
        hidden(
            "SELECT dblink_connect('host=db password\t=sekrit')",
            "sekrit",
        );
        hidden(
            "SELECT dblink_connect(format('host=db password=%s', 'sekrit'))",
            "sekrit",
        );
        hidden(
            "SELECT dblink_connect('host=db password=' || 'sekrit')",
            "sekrit",
        );
        let body = hidden(
            "DO $$ BEGIN CREATE ROLE app LOGIN PASSWORD 'sekrit'; END $$",
            "sekrit",
        );
        assert!(
            body.contains("CREATE ROLE app LOGIN PASSWORD '***'"),
            "{body}"
        );
        hidden(
            "DO $do$ BEGIN EXECUTE 'ALTER ROLE app PASSWORD ''sekrit'''; END $do$",
            "sekrit",
        );
    }
}
