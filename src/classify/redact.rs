//! Secrets out of statement text before it is logged or audited:
//! `PASSWORD '...'` (CREATE/ALTER ROLE and USER, user mappings' `password`
//! option) becomes `PASSWORD '***'`.

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
    {
        return Cow::Borrowed(sql);
    }
    let Ok(tokens) = lexer::tokenize(sql) else {
        return Cow::Owned("<withheld: mentions a password and could not be tokenized>".into());
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
            _ => {
                after_password = false;
                out.push_str(&token.to_string());
            }
        }
    }
    Cow::Owned(out)
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
        // Not a password: left alone.
        assert_eq!(redact("SELECT 'password'"), "SELECT 'password'");
    }
}
