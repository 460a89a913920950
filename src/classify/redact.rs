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
    if !sql
        .as_bytes()
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"password"))
        && !sql.contains("://")
    {
        return Cow::Borrowed(sql);
    }
    let Ok(tokens) = lexer::tokenize(sql) else {
        return Cow::Owned("<withheld: may hold a secret and could not be tokenized>".into());
    };
    let mut out = String::with_capacity(sql.len());
    let mut after_password = false;
    for t in tokens {
        let token = t.token;
        match &token {
            Token::Word(w)
                if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("password") =>
            {
                after_password = true;
                out.push_str(&token.to_string());
            }
            Token::Whitespace(_) => out.push_str(&token.to_string()),
            Token::SingleQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::UnicodeStringLiteral(_)
                if after_password =>
            {
                after_password = false;
                out.push_str("'***'");
            }
            Token::SingleQuotedString(v)
            | Token::EscapedStringLiteral(v)
            | Token::NationalStringLiteral(v)
            | Token::UnicodeStringLiteral(v)
                if conninfo_password(v) =>
            {
                after_password = false;
                out.push_str("'***'");
            }
            Token::DollarQuotedString(v) if conninfo_password(&v.value) => {
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

/// `host=db password=...` or `postgres://u:...@h`: a connection string with
/// a secret in it (the whole literal goes; over-redacting is the safe side).
fn conninfo_password(literal: &str) -> bool {
    let lower = literal.to_ascii_lowercase();
    lower.split_whitespace().any(|w| w.starts_with("password="))
        || lower.contains("password =")
        || (lower.contains("://") && lower.contains('@'))
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
}
