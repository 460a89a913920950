//! Rewrites of a statement that PostgreSQL reads as the very same tree:
//! comments between tokens (glued to operators, as `</**/`), keyword case,
//! whitespace, and string constants re-quoted with dollar tags (non-ASCII
//! ones included). The differential test and fuzzer use them: whatever the
//! rewrite, the classifier's answer must not drop, since PostgreSQL's
//! reading did not change. Driven by a caller's random numbers, so runs
//! are reproducible from a seed.

/// A small deterministic generator (xorshift64*), enough for mutation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const GAPS: &[&str] = &[
    "/**/",
    "/* x */",
    "/* ' */",
    "/* $$ */",
    "/* /* nested */ */",
    "-- '\n",
    "--\r",
    "-- $q$\n",
    "\t",
    "\n",
    "\r\n",
    "\u{c}",
    "  ",
];

const TAGS: &[&str] = &["", "q", "€", "a€", "é", "_x", "ß1", "\u{212a}"];

/// One rewrite of `sql` (unchanged when PostgreSQL cannot scan it).
pub fn mutate(sql: &str, rng: &mut Rng) -> String {
    let Ok(scan) = pg_query::scan(sql) else {
        return sql.to_owned();
    };
    let mut out = String::with_capacity(sql.len() + 16);
    let mut at = 0usize;
    let pick = rng.below(3);
    for t in &scan.tokens {
        let (start, end) = (t.start as usize, t.end as usize);
        let (Some(gap), Some(text)) = (sql.get(at..start), sql.get(start..end)) else {
            return sql.to_owned();
        };
        // Between tokens: maybe a comment or other whitespace, glued on.
        if rng.below(4) == 0 {
            out.push_str(GAPS[rng.below(GAPS.len())]);
        } else {
            out.push_str(gap);
        }
        let keyword = t.keyword_kind != 0;
        let sconst = t.token == pg_query::protobuf::Token::Sconst as i32;
        if keyword && pick == 0 {
            for c in text.chars() {
                if rng.below(2) == 0 {
                    out.push(c.to_ascii_uppercase());
                } else {
                    out.push(c.to_ascii_lowercase());
                }
            }
        } else if sconst && pick == 1 && text.starts_with('\'') && text.len() >= 2 {
            // 'it''s' → $tag$it's$tag$ : the same constant to PostgreSQL.
            let value = text[1..text.len() - 1].replace("''", "'");
            let tag = TAGS[rng.below(TAGS.len())];
            let quote = format!("${tag}$");
            if value.contains(&quote) || value.ends_with('$') {
                out.push_str(text);
            } else {
                out.push_str(&quote);
                out.push_str(&value);
                out.push_str(&quote);
            }
        } else {
            out.push_str(text);
        }
        at = end;
    }
    out.push_str(sql.get(at..).unwrap_or(""));
    out
}
