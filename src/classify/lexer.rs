//! Token-level work before and beside the parser: PostgreSQL's `U&"…"`
//! identifiers (which sqlparser would read as `U & "…"`), splitting a string
//! the parser rejects into its statements, and naming the statements
//! sqlparser cannot parse but whose first words say what they are.
//!
//! Splitting uses sqlparser's tokenizer, so comments (`--` ending at `\n` or
//! `\r`, nested `/* */`), dollar quotes, `E''` strings and quoted identifiers
//! are honoured exactly where PostgreSQL's lexer honours them.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

use super::Class;

pub(crate) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    unicode_identifiers(tokens)
}

/// The identifier of a `U&"…"` starting at `w[0]`, if one does.
fn unicode_ident(w: &[TokenWithSpan]) -> Option<&Word> {
    match w {
        [u, amp, id, ..]
            if matches!(&u.token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case("u"))
                && amp.token == Token::Ampersand =>
        {
            match &id.token {
                Token::Word(x) if x.quote_style == Some('"') => Some(x),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Replace `U&"d\0061t\+000061"` [UESCAPE 'c'] with the identifier it spells.
fn unicode_identifiers(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, String> {
    if !(0..tokens.len()).any(|i| unicode_ident(&tokens[i..]).is_some()) {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let Some(ident) = unicode_ident(&tokens[i..]) else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        // Optional `UESCAPE 'c'` after the identifier.
        let mut j = i + 3;
        let mut escape = '\\';
        let mut k = j;
        while matches!(tokens.get(k).map(|t| &t.token), Some(Token::Whitespace(_))) {
            k += 1;
        }
        if matches!(tokens.get(k).map(|t| &t.token), Some(Token::Word(x)) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case("uescape"))
        {
            k += 1;
            while matches!(tokens.get(k).map(|t| &t.token), Some(Token::Whitespace(_))) {
                k += 1;
            }
            match tokens.get(k).map(|t| &t.token) {
                Some(Token::SingleQuotedString(s)) if s.chars().count() == 1 => {
                    escape = s.chars().next().unwrap_or('\\');
                    j = k + 1;
                }
                _ => return Err("invalid UESCAPE clause".into()),
            }
        }
        let value = decode_unicode_escapes(&ident.value, escape)?;
        let mut span = tokens[i].span;
        span.end = tokens[j - 1].span.end;
        out.push(TokenWithSpan {
            token: Token::Word(Word {
                value,
                quote_style: Some('"'),
                keyword: sqlparser::keywords::Keyword::NoKeyword,
            }),
            span,
        });
        i = j;
    }
    Ok(out)
}

fn decode_unicode_escapes(s: &str, esc: char) -> Result<String, String> {
    let bad = || format!("invalid Unicode escape in U&\"{s}\"");
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != esc {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&esc) {
            chars.next();
            out.push(esc);
            continue;
        }
        let n = if chars.peek() == Some(&'+') {
            chars.next();
            6
        } else {
            4
        };
        let hex: String = chars.by_ref().take(n).collect();
        if hex.len() != n {
            return Err(bad());
        }
        let code = u32::from_str_radix(&hex, 16).map_err(|_| bad())?;
        out.push(
            char::from_u32(code)
                .filter(|c| *c != '\0')
                .ok_or_else(bad)?,
        );
    }
    Ok(out)
}

/// The most operators in any one statement. Binary operators, casts and
/// other postfix forms are parsed in a loop into left-deep trees, so this
/// bounds the depth of the tree that walking and dropping must recurse
/// through (the parser's own recursion limit does not see it).
pub(crate) fn max_operators(tokens: &[TokenWithSpan]) -> usize {
    let mut max = 0;
    let mut cur = 0;
    for t in tokens {
        match &t.token {
            Token::SemiColon => {
                max = max.max(cur);
                cur = 0;
            }
            Token::Word(w) if w.quote_style.is_none() => {
                use sqlparser::keywords::Keyword as K;
                if matches!(
                    w.keyword,
                    K::OR
                        | K::AND
                        | K::NOT
                        | K::IS
                        | K::COLLATE
                        | K::AT
                        | K::LIKE
                        | K::ILIKE
                        | K::SIMILAR
                        | K::BETWEEN
                        | K::IN
                        | K::NOTNULL
                        | K::ESCAPE
                ) {
                    cur += 1;
                }
            }
            Token::Word(_)
            | Token::Number(..)
            | Token::Whitespace(_)
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::SingleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::Placeholder(_) => {}
            _ => cur += 1,
        }
    }
    max.max(cur)
}

/// Split tokens into statements at top-level semicolons. Empty statements
/// (only whitespace and comments) are dropped.
pub(crate) fn split(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for t in tokens {
        if t.token == Token::SemiColon {
            if has_content(&cur) {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
        } else {
            cur.push(t);
        }
    }
    if has_content(&cur) {
        out.push(cur);
    }
    out
}

fn has_content(tokens: &[TokenWithSpan]) -> bool {
    tokens
        .iter()
        .any(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
}

/// The first few words of a statement, uppercased, for [`unparsed`].
pub(crate) fn leading_words(tokens: &[TokenWithSpan], n: usize) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .take(n)
        .map(|t| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect()
}

/// Class of a statement the parser rejected. A few statements PostgreSQL
/// has and sqlparser does not are recognised by their first words; this can
/// only name a class, never make one milder than `unknown` except where the
/// words fix what PostgreSQL will do. Everything else is `unknown` with the
/// parser's message.
pub(crate) fn unparsed(tokens: &[TokenWithSpan], parser_error: &str) -> (Class, String) {
    let w = leading_words(tokens, 4);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["DROP", "OWNED", ..] => (
            Class::Destructive,
            "DROP OWNED drops every object a role owns".into(),
        ),
        // Whatever follows, PostgreSQL either drops something or errors.
        ["DROP", ..] => (
            Class::Destructive,
            format!("DROP {}", w.get(1).unwrap_or(&"")),
        ),
        ["TRUNCATE", ..] => (Class::Destructive, "TRUNCATE removes every row".into()),
        ["VACUUM" | "ANALYZE" | "CLUSTER" | "REINDEX", ..] => {
            (Class::Ddl, format!("{} (maintenance)", w[0]))
        }
        ["CREATE" | "ALTER", "ROLE" | "USER" | "GROUP", ..] => {
            (Class::Privileged, "role or membership change".into())
        }
        ["CREATE", "PROCEDURE" | "FUNCTION", ..]
        | ["CREATE", "OR", "REPLACE", "PROCEDURE" | "FUNCTION"] => match language(tokens) {
            Some(l) if matches!(l.as_str(), "sql" | "plpgsql" | "pltcl" | "plperl" | "plv8") => (
                Class::Destructive,
                format!(
                    "CREATE {}: a {l} body runs whatever it contains when called",
                    w[w.len() - 1]
                ),
            ),
            Some(l) => (
                Class::Privileged,
                format!("CREATE routine in language {l} (untrusted or native code)"),
            ),
            None => (
                Class::Unknown,
                format!("infraveil could not parse this statement: {parser_error}"),
            ),
        },
        ["DO", ..] => (
            Class::Destructive,
            "DO block: runs procedural code and dynamic SQL infraveil cannot inspect".into(),
        ),
        ["ALTER", "SYSTEM", ..] => (
            Class::Privileged,
            "ALTER SYSTEM changes the server configuration".into(),
        ),
        ["LOAD", ..] => (
            Class::Privileged,
            "LOAD loads a shared library into the server".into(),
        ),
        ["CHECKPOINT", ..] => (Class::Privileged, "CHECKPOINT forces a checkpoint".into()),
        ["REASSIGN", "OWNED", ..] => (
            Class::Privileged,
            "REASSIGN OWNED changes the owner of objects".into(),
        ),
        _ => (
            Class::Unknown,
            format!("infraveil could not parse this statement: {parser_error}"),
        ),
    }
}

/// The word after `LANGUAGE`, lowercased.
fn language(tokens: &[TokenWithSpan]) -> Option<String> {
    let mut words = tokens.iter().filter_map(|t| match &t.token {
        Token::Word(w) => Some(w),
        Token::SingleQuotedString(_) => None,
        _ => None,
    });
    while let Some(w) = words.next() {
        if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("language") {
            return words.next().map(|l| l.value.to_lowercase());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_identifiers_decode_like_postgres() {
        assert_eq!(
            decode_unicode_escapes("d\\0061t\\+000061", '\\').unwrap(),
            "data"
        );
        assert_eq!(decode_unicode_escapes("a!0062!!", '!').unwrap(), "ab!");
        assert!(decode_unicode_escapes("x\\00", '\\').is_err());
        assert!(decode_unicode_escapes("x\\0000", '\\').is_err());
    }

    #[test]
    fn split_honours_quotes_comments_and_dollar_quotes() {
        let sql = "SELECT ';' /* ; /* nested ; */ ; */; SELECT $x$ ; $x$ -- ;\r; SELECT E'\\';'";
        let parts = split(tokenize(sql).unwrap());
        assert_eq!(parts.len(), 3, "{parts:?}");
    }
}
