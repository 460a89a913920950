//! Cache keys for query texts that differ only in their numbers: a key is
//! equal for two texts only when they classify alike, so the proxy's cache
//! can answer for a text it has not parsed. `number_shape_key` reads tokens;
//! `quick_shape_key` answers the plainest texts without the lexer.

use super::lexer;

/// A key under which `sql` classifies exactly as every text with the same
/// key: the text with each digit of each numeric literal replaced by `9`,
/// for one `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `WITH`, `VALUES` or
/// `TABLE` statement; `None` for anything else. Applications send the
/// same statements with different numbers (`WHERE aid = 48213`), and the
/// firewall should not parse each one again.
///
/// Why this is sound: numbers keep their shape (length, `.`, `e`), so
/// PostgreSQL's lexer and both parsers split the text the same way, and in
/// these statements no rule reads a numeric value. The rules that do
/// (`EXPLAIN (ANALYZE 0)`, `FETCH -1`, `SET x = 0` and option lists) belong
/// to statements that never get a key. Strings are left alone: their
/// values are read (`set_config('role', …)`, names of the database's own
/// objects). `number_keys_classify_alike` checks this over the corpus.
pub fn number_shape_key(sql: &str) -> Option<String> {
    use sqlparser::tokenizer::Token;
    let tokens = lexer::tokenize(sql).ok()?;
    let mut key = String::with_capacity(sql.len() + 2);
    key.push_str("#\u{0}");
    let mut statements = 0;
    let mut in_statement = false;
    let mut numbers = 0;
    // Per open parenthesis: whether it holds a name's arguments (see
    // `name_arguments`), and the last token that was not whitespace.
    let mut parens: Vec<bool> = Vec::new();
    let (mut prev, mut before_prev): (Option<&Token>, Option<&Token>) = (None, None);
    for t in &tokens {
        match &t.token {
            Token::LParen => parens.push(match prev {
                Some(Token::Word(w)) => {
                    w.quote_style.is_some()
                        || matches!(before_prev, Some(Token::Period))
                        || name_arguments(w.value.as_bytes())
                }
                _ => false,
            }),
            Token::RParen => {
                parens.pop();
            }
            _ => {}
        }
        if !matches!(t.token, Token::Whitespace(_)) {
            before_prev = prev;
            prev = Some(&t.token);
        }
        match &t.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => in_statement = false,
            Token::Word(w) if !in_statement => {
                statements += 1;
                in_statement = true;
                if statements > 1
                    || !matches!(
                        w.value.to_ascii_uppercase().as_str(),
                        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "WITH" | "VALUES" | "TABLE"
                    )
                    || w.quote_style.is_some()
                {
                    return None;
                }
            }
            // `(SELECT …)` and anything else that opens a statement.
            _ if !in_statement => return None,
            _ => {}
        }
        match &t.token {
            Token::Number(n, long) if !parens.last().copied().unwrap_or(false) => {
                numbers += 1;
                key.push_str("N(");
                key.extend(n.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }));
                key.push_str(if *long { "L)" } else { ")" });
            }
            // Every other token exactly, unambiguously (Debug quotes and
            // escapes its contents).
            other => {
                use std::fmt::Write;
                let _ = write!(key, "{other:?}");
            }
        }
    }
    // Without numbers the exact text is the key already.
    (statements == 1 && numbers > 0).then_some(key)
}

/// [`number_shape_key`] without the lexer, for the plainest texts: one
/// `SELECT`/`INSERT`/`UPDATE`/`DELETE`/`WITH`/`VALUES`/`TABLE` statement in
/// ASCII with no quote, dollar, backslash or comment anywhere, where each
/// run of digits with a delimiter (space, `=`, `<`, `>`, `(`, `)`, `,`,
/// `+`, `-`, `*`, `/`, `%`, `;` or an end) on both sides has every digit
/// replaced by `9`. `None` when the text has no such run or is not that
/// plain.
///
/// Why this is sound: without quotes, dollars or comments a text has no
/// strings, quoted identifiers, parameters or comments, so a digit run
/// bounded by delimiters can only be an integer literal, for PostgreSQL's
/// lexer and for sqlparser's alike; two texts with the same key differ
/// only in the values of such literals, which is the case
/// [`number_shape_key`] already argues. The point is speed: it answers a
/// cache lookup without tokenizing (`quick_keys_classify_alike`).
pub fn quick_shape_key(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let body = sql.trim_matches(|c: char| c.is_ascii_whitespace());
    let body = body.strip_suffix(';').unwrap_or(body);
    let first = body
        .split(|c: char| c.is_ascii_whitespace() || c == '(')
        .next()?;
    if ![
        "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "TABLE",
    ]
    .iter()
    .any(|k| first.eq_ignore_ascii_case(k))
    {
        return None;
    }
    if body.contains(';')
        || body.contains("--")
        || body.contains("/*")
        || body.contains("*/")
        || b.iter()
            .any(|&c| !c.is_ascii() || matches!(c, b'\'' | b'"' | b'$' | b'\\' | b'`' | 0))
    {
        return None;
    }
    let delimiter = |c: Option<&u8>| {
        c.is_none_or(|c| {
            c.is_ascii_whitespace()
                || matches!(
                    c,
                    b'=' | b'<'
                        | b'>'
                        | b'('
                        | b')'
                        | b','
                        | b'+'
                        | b'-'
                        | b'*'
                        | b'/'
                        | b'%'
                        | b';'
                )
        })
    };
    let mut key = Vec::with_capacity(b.len() + 3);
    key.extend_from_slice(b"#q\0");
    let mut numbers = 0;
    // Per open parenthesis: whether it holds a name's arguments.
    let mut parens: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'(' {
            parens.push(name_arguments(&b[..i]));
        } else if b[i] == b')' {
            parens.pop();
        }
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let bounded =
                delimiter(start.checked_sub(1).and_then(|p| b.get(p))) && delimiter(b.get(i));
            if bounded && !parens.last().copied().unwrap_or(false) {
                numbers += 1;
                key.resize(key.len() + (i - start), b'9');
            } else {
                key.extend_from_slice(&b[start..i]);
            }
        } else {
            key.push(b[i]);
            i += 1;
        }
    }
    // Every byte is ASCII.
    (numbers > 0).then(|| String::from_utf8(key).ok()).flatten()
}

/// Whether a `(` after `before` opens a name's arguments: a function's, or
/// a type's modifiers (`varchar(n)`, `float(p)`, `timestamp(p)`, or any
/// type's through its `typmodin`), whose integer values PostgreSQL's
/// grammar or the type reads. After `IN`, `VALUES` and the reserved words
/// that begin an expression (none can name a type) a `(` holds a plain
/// list or expression. Numbers in arguments keep their exact digits in the
/// cache keys.
fn name_arguments(before: &[u8]) -> bool {
    let before = before.trim_ascii_end();
    let word_start = before
        .iter()
        .rposition(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .map_or(0, |p| p + 1);
    let word = &before[word_start..];
    if word.is_empty() {
        // `, (`, `= (`, `((`: a row or a subquery, not arguments; `"t" (`
        // and `U&"f" (` never reach here (quick keys refuse quotes).
        return false;
    }
    let qualified = word_start > 0 && before[word_start - 1] == b'.';
    const LISTS: &[&[u8]] = &[
        b"in", b"values", b"where", b"and", b"or", b"not", b"on", b"when", b"then", b"else",
        b"select", b"having", b"limit", b"offset",
    ];
    qualified || !LISTS.iter().any(|w| word.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests;
