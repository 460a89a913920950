//! A small SQL keyword highlighter for statements shown to approvers. It
//! only wraps tokens in spans; every piece of text goes through maud's
//! escaping, and characters that hide or reorder text are made visible
//! first (as on the approval page).

use maud::{Markup, html};

/// Keywords that mark what destroys or escalates: shown in red.
const DANGER: &[&str] = &[
    "DROP",
    "TRUNCATE",
    "DELETE",
    "CASCADE",
    "ALTER",
    "GRANT",
    "REVOKE",
    "OWNER",
    "SUPERUSER",
    "EXECUTE",
    "DO",
    "COPY",
    "PROGRAM",
    "UPDATE",
];

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "INSERT",
    "INTO",
    "VALUES",
    "SET",
    "TABLE",
    "CREATE",
    "INDEX",
    "VIEW",
    "JOIN",
    "ON",
    "USING",
    "RETURNING",
    "WITH",
    "AS",
    "IF",
    "EXISTS",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "ORDER",
    "BY",
    "GROUP",
    "LIMIT",
    "NULL",
    "IS",
    "IN",
    "ROLE",
    "SCHEMA",
    "COLUMN",
    "CONSTRAINT",
    "MERGE",
    "CALL",
    "RESTRICT",
    "ONLY",
    "CONFLICT",
    "SYSTEM",
];

#[derive(Debug, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Comment(&'a str),
    Other(&'a str),
}

fn tokens(s: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let end = if c.is_alphanumeric() || c == '_' {
            rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.len())
        } else if c == '\'' {
            // To the closing quote ('' is an escaped quote: two strings in a
            // row read the same), or the end.
            rest[1..].find('\'').map_or(rest.len(), |i| i + 2)
        } else if rest.starts_with("--") {
            rest.find('\n').unwrap_or(rest.len())
        } else {
            c.len_utf8()
        };
        let (tok, tail) = rest.split_at(end);
        out.push(if c == '\'' {
            Token::Quoted(tok)
        } else if tok.starts_with("--") {
            Token::Comment(tok)
        } else if c.is_alphanumeric() || c == '_' {
            Token::Word(tok)
        } else {
            Token::Other(tok)
        });
        rest = tail;
    }
    out
}

/// `sql` as marked-up, escaped HTML (the caller puts it in a `<pre>`), and
/// whether it held characters that hide or reorder text.
pub fn sql(sql: &str) -> (Markup, bool) {
    let (shown, hidden) = crate::approvals::notify::reveal(sql);
    let markup = html! {
        @for t in tokens(&shown) {
            @match t {
                Token::Word(w) if DANGER.iter().any(|k| k.eq_ignore_ascii_case(w)) => span.kw.danger { (w) },
                Token::Word(w) if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w)) => span.kw { (w) },
                Token::Word(w) | Token::Other(w) => (w),
                Token::Quoted(q) => span.str { (q) },
                Token::Comment(c) => span.comment { (c) },
            }
        }
    };
    (markup, hidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_marked_and_everything_is_escaped() {
        let (m, hidden) = sql("DROP TABLE t; select '<b>' -- </pre>\n");
        let s = m.into_string();
        assert!(!hidden);
        assert!(
            s.starts_with(
                "<span class=\"kw danger\">DROP</span> <span class=\"kw\">TABLE</span> t;"
            ),
            "{s}"
        );
        assert!(s.contains("<span class=\"str\">'&lt;b&gt;'</span>"), "{s}");
        assert!(
            s.contains("<span class=\"comment\">-- &lt;/pre&gt;</span>"),
            "{s}"
        );
        assert!(!s.contains("<b>") && !s.contains("</pre>"), "{s}");
    }

    #[test]
    fn hidden_characters_are_shown_and_flagged() {
        let (m, hidden) = sql("SELECT 1 -- \u{202e}x");
        assert!(hidden);
        assert!(m.into_string().contains("\\u{202e}"));
    }

    #[test]
    fn an_unclosed_quote_runs_to_the_end() {
        assert_eq!(
            tokens("a 'b"),
            vec![Token::Word("a"), Token::Other(" "), Token::Quoted("'b")]
        );
    }
}
