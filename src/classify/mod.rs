//! The classifier: SQL text in, per statement a [`Class`], the tables it
//! touches and a reason out. No I/O, so the proxy and `veilctl check` share it.
//!
//! Two readings of every string are held against each other. `walk` walks
//! sqlparser's tree (PostgreSQL dialect; `lexer` does what must happen at
//! token level, `bounds` finds unbounded DELETE/UPDATE). `pg` reads the same
//! text with PostgreSQL's own scanner and grammar (libpg_query), which is the
//! authority on what the text means: where the two disagree on the split into
//! statements, a statement's kind, or the relations, functions, operators
//! and strings it holds, the statement is `unknown`; the class is never below
//! what PostgreSQL's tree implies. `functions` and `settings` are the
//! reviewed lists. It fails closed: text either parser rejects and nodes a
//! walk does not know are `unknown`, never `read`.

mod bounds;
pub(crate) mod functions;
mod lexer;
#[doc(hidden)]
pub mod mutate;
mod names;
pub mod objects;
mod pg;
mod redact;
mod settings;
mod walk;

pub use redact::redact;
pub use settings::names_utf8;

pub(crate) use names::resolve;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// sqlparser's nesting limit; deeper input is `unknown`.
const RECURSION_LIMIT: usize = 64;
/// Operators one statement may have; more is `unknown` (see
/// `lexer::max_operators`: this bounds how deep the tree can be).
const MAX_OPERATORS: usize = 20_000;
/// Up to this many, the tree is shallow enough for any thread's stack; past
/// it the work runs on a stack of [`DEEP_STACK`] bytes (reserved, touched
/// only as deep as the tree needs).
const SHALLOW_OPERATORS: usize = 256;
const DEEP_STACK: usize = 256 << 20;

/// The risk class of a statement, least to most severe.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    #[default]
    Read,
    Write,
    Ddl,
    Destructive,
    Privileged,
    Unknown,
}

impl Class {
    /// Every class, least severe first.
    pub const ALL: [Class; 6] = [
        Class::Read,
        Class::Write,
        Class::Ddl,
        Class::Destructive,
        Class::Privileged,
        Class::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Ddl => "ddl",
            Class::Destructive => "destructive",
            Class::Privileged => "privileged",
            Class::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table, schema-qualified (`public` when the statement does not say).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: &str, name: &str) -> TableName {
        TableName {
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

impl Serialize for TableName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one statement is.
#[derive(Debug, Clone, Serialize)]
pub struct StatementClass {
    pub class: Class,
    pub tables: Vec<TableName>,
    pub reason: String,
    /// Functions called that are not in the reviewed table; they make the
    /// class `unknown` unless the role lists them in `safe_functions`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// Class and reason if every function in `functions` is declared safe.
    #[serde(skip)]
    pub base_class: Class,
    #[serde(skip)]
    pub base_reason: String,
    /// `PREPARE name AS …`: the session remembers `name` with this class.
    #[serde(skip)]
    pub prepares: Option<String>,
    /// `EXECUTE name`: the class is the one remembered for `name`.
    #[serde(skip)]
    pub executes: Option<String>,
    /// For `EXECUTE`: the class of its arguments alone.
    #[serde(skip)]
    pub execute_args: Class,
    /// Names the database's own objects could answer to (see `objects`).
    #[serde(skip)]
    pub names: objects::Names,
    /// What it does to the session's prepared statements and portals, as
    /// PostgreSQL's parser reads it.
    #[serde(skip)]
    pub session: SessionEffect,
    /// It calls a function whose effect a rollback does not undo
    /// (`nextval`, `setval`, `dblink…`), as either parser reads the call.
    #[serde(skip)]
    pub outlives_rollback: bool,
}

/// What a statement does to the names PostgreSQL keeps for a session: the
/// proxy's model of the session applies it when PostgreSQL confirms the
/// statement ran (its command tag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SessionEffect {
    #[default]
    None,
    /// `PREPARE name AS …`
    Prepare(String),
    Deallocate(String),
    DeallocateAll,
    /// `DISCARD ALL` (the other DISCARD forms keep statements and portals).
    DiscardAll,
    /// `DECLARE name CURSOR …`; `hold` for `WITH HOLD`.
    Declare {
        name: String,
        hold: bool,
    },
    Close(String),
    CloseAll,
    /// `FETCH` or `MOVE` on a portal: runs it, whatever made it.
    /// `forward`: only onward (a rewind can run a cursor's query again).
    Fetch {
        name: String,
        forward: bool,
    },
    /// The texts' split into statements is not known: any change to the
    /// session's names that PostgreSQL reports cannot be placed.
    Unknown,
}

impl SessionEffect {
    /// The command tag PostgreSQL 15 answers this statement with, when it
    /// changes the session's names.
    pub fn tag(&self) -> Option<&'static str> {
        Some(match self {
            SessionEffect::Prepare(_) => "PREPARE",
            SessionEffect::Deallocate(_) => "DEALLOCATE",
            SessionEffect::DeallocateAll => "DEALLOCATE ALL",
            SessionEffect::DiscardAll => "DISCARD ALL",
            SessionEffect::Declare { .. } => "DECLARE CURSOR",
            SessionEffect::Close(_) => "CLOSE CURSOR",
            SessionEffect::CloseAll => "CLOSE CURSOR ALL",
            SessionEffect::None | SessionEffect::Fetch { .. } | SessionEffect::Unknown => {
                return None;
            }
        })
    }
}

/// Every statement of one query string, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub statements: Vec<StatementClass>,
}

impl Analysis {
    /// The most severe class of the string (`read` when it is empty).
    pub fn class(&self) -> Class {
        self.statements
            .iter()
            .map(|s| s.class)
            .max()
            .unwrap_or(Class::Read)
    }
}

/// Classify a query string: one entry per statement.
pub fn classify(sql: &str) -> Analysis {
    classify_at(sql, 0)
}

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

/// The first keyword of each statement in `sql` (uppercased), as
/// PostgreSQL's lexer would split them; `None` if it does not tokenize.
/// Used where the firewall itself must know how many statements a string
/// holds (an approval preview `EXPLAIN`s only a single statement).
pub fn leading_keywords(sql: &str) -> Option<Vec<String>> {
    let tokens = lexer::tokenize(sql).ok()?;
    Some(
        lexer::split(tokens)
            .iter()
            .map(|chunk| {
                lexer::leading_words(chunk, 1)
                    .into_iter()
                    .next()
                    .unwrap_or_default()
            })
            .collect(),
    )
}

/// The class of setting `name` to `value` (a start-up parameter: the text
/// as the client sent it), with why: the same rules as `SET`.
pub fn setting(name: &str, value: &str) -> (Class, String) {
    settings::classify(name, Some(&[value.to_owned()]))
}

/// PostgreSQL's own reading of `sql`, for the differential test and
/// fuzzer: the class its tree alone implies (unknown where it calls
/// unreviewed functions or user operators), and a key that is equal for
/// two texts exactly when PostgreSQL parses them into the same tree.
#[doc(hidden)]
pub fn postgres_reading(sql: &str) -> Result<(Class, String), String> {
    let statements = pg::read(sql)?;
    let class = statements
        .iter()
        .map(|s| {
            if s.unknown.is_some() || !s.unlisted.is_empty() {
                Class::Unknown
            } else {
                s.floor
            }
        })
        .max()
        .unwrap_or(Class::Read);
    Ok((class, pg::tree_key(sql)?))
}

fn unknown(reason: String) -> StatementClass {
    StatementClass {
        class: Class::Unknown,
        tables: Vec::new(),
        reason: reason.clone(),
        functions: Vec::new(),
        base_class: Class::Unknown,
        base_reason: reason,
        prepares: None,
        executes: None,
        execute_args: Class::Unknown,
        names: objects::Names::default(),
        session: SessionEffect::Unknown,
        outlives_rollback: true,
    }
}

fn parse(
    tokens: Vec<sqlparser::tokenizer::TokenWithSpan>,
) -> Result<Vec<sqlparser::ast::Statement>, String> {
    Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| e.to_string())
}

/// `depth` counts enclosing SQL function bodies.
pub(crate) fn classify_at(sql: &str, depth: usize) -> Analysis {
    let tokens = match lexer::tokenize(sql) {
        Ok(t) => t,
        Err(e) => {
            return Analysis {
                statements: vec![unknown(format!(
                    "infraveil could not tokenize this statement: {e}"
                ))],
            };
        }
    };
    let ops = lexer::max_operators(&tokens);
    if ops > MAX_OPERATORS {
        return Analysis {
            statements: vec![unknown(format!(
                "a statement has {ops} operators; infraveil inspects at most {MAX_OPERATORS}"
            ))],
        };
    }
    if ops > SHALLOW_OPERATORS {
        // Parse, walk and drop the tree on the big stack.
        return stacker::grow(DEEP_STACK, || analyze(sql, tokens, depth));
    }
    analyze(sql, tokens, depth)
}

fn analyze(sql: &str, tokens: Vec<sqlparser::tokenizer::TokenWithSpan>, depth: usize) -> Analysis {
    // Parse the whole string first; only if that fails, statement by
    // statement, so one unparseable statement does not hide the others'
    // classes (and DO / ALTER SYSTEM are named rather than just unknown).
    // The rare failure tokenizes again rather than every parse cloning.
    let all =
        |stmts: Vec<sqlparser::ast::Statement>| -> Vec<(StatementClass, Option<walk::Facts>)> {
            stmts
                .iter()
                .map(|s| {
                    let (c, f) = walk::Walker::classify(s, depth);
                    (c, Some(f))
                })
                .collect()
        };
    let read = match parse(tokens) {
        Ok(stmts) => all(stmts),
        // It tokenized a moment ago; should it not now, fail closed.
        Err(e) => match lexer::tokenize(sql) {
            Ok(t) => lexer::split(t)
                .into_iter()
                .flat_map(|chunk| match parse(chunk.clone()) {
                    Ok(stmts) => all(stmts),
                    Err(e) => {
                        let (class, reason) = lexer::unparsed(&chunk, &e);
                        let mut s = unknown(reason);
                        s.class = class;
                        s.base_class = class;
                        vec![(s, None)]
                    }
                })
                .collect(),
            Err(_) => vec![(unknown(e), None)],
        },
    };
    Analysis {
        statements: reconcile(sql, read, depth),
    }
}

/// Hold the walk's reading against PostgreSQL's own (see `pg`). `depth`
/// counts enclosing routine bodies, as in `classify_at`.
fn reconcile(
    sql: &str,
    mut ours: Vec<(StatementClass, Option<walk::Facts>)>,
    depth: usize,
) -> Vec<StatementClass> {
    let theirs = match pg::read(sql) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("PostgreSQL's parser does not accept this text: {e}");
            if ours.is_empty() {
                return vec![unknown(why)];
            }
            return ours
                .into_iter()
                .map(|(mut s, _)| {
                    s.disagree(why.clone());
                    s
                })
                .collect();
        }
    };
    if theirs.len() != ours.len() {
        let why = format!(
            "PostgreSQL reads {} statement(s) in this text and infraveil's parser {}: the readings disagree",
            theirs.len(),
            ours.len()
        );
        let mut out: Vec<StatementClass> = ours.into_iter().map(|(s, _)| s).collect();
        if out.is_empty() {
            out.push(unknown(why.clone()));
        }
        for s in &mut out {
            s.disagree(why.clone());
        }
        return out;
    }
    for ((s, facts), p) in ours.iter_mut().zip(theirs) {
        s.hold_against(facts.as_ref(), p, depth);
    }
    ours.into_iter().map(|(s, _)| s).collect()
}

/// Statement kinds whose reading the walk depends on in detail.
const DETAILED_KINDS: &[&str] = &[
    "SelectStmt",
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
];

impl StatementClass {
    /// The readings disagree: `unknown`, whatever any policy lists.
    fn disagree(&mut self, why: String) {
        if self.base_class == Class::Unknown && self.class == Class::Unknown {
            return;
        }
        self.class = Class::Unknown;
        self.base_class = Class::Unknown;
        self.execute_args = Class::Unknown;
        self.reason = why.clone();
        self.base_reason = why;
    }

    fn raise_both(&mut self, class: Class, why: &str) {
        if class > self.base_class {
            self.base_class = class;
            self.base_reason = why.to_owned();
        }
        if class > self.class {
            self.class = class;
            self.reason = why.to_owned();
        }
        self.execute_args = self.execute_args.max(class);
    }

    fn hold_against(&mut self, facts: Option<&walk::Facts>, mut p: pg::PgStatement, depth: usize) {
        self.session = std::mem::take(&mut p.session);
        let outlives = p
            .called
            .iter()
            .chain(facts.iter().flat_map(|f| f.called.iter()))
            .any(|c| functions::outlives_rollback(c.strip_prefix("pg_catalog.").unwrap_or(c)));
        self.outlives_rollback = outlives;
        // EXECUTE takes its class from the session's PREPARE: never here.
        if facts.is_none() && !p.needs_walk && p.unknown.is_none() && p.kind != "ExecuteStmt" {
            // sqlparser cannot parse it (`TABLE t`, `EXPLAIN ANALYSE …`,
            // `xmlelement(name …)`), and nothing in it needs the walk's
            // bounds analysis: PostgreSQL's own reading is the whole answer.
            *self = StatementClass {
                class: p.floor,
                tables: p.relations.into_iter().collect(),
                reason: p.reason.clone(),
                functions: Vec::new(),
                base_class: p.floor,
                base_reason: p.reason,
                prepares: p.prepares,
                executes: None,
                execute_args: p.floor,
                names: p.names,
                session: std::mem::take(&mut self.session),
                outlives_rollback: outlives,
            };
            // The walk classifies routine bodies; here nobody else will.
            for (what, body) in &p.sql_bodies {
                if depth >= walk::MAX_BODY_DEPTH {
                    return self.disagree("function bodies nested too deeply".into());
                }
                for s in classify_at(body, depth + 1).statements {
                    self.raise_both(s.base_class, &format!("{what} body: {}", s.base_reason));
                    self.tables.extend(s.tables);
                    self.functions.extend(s.functions);
                }
            }
            self.tables.sort();
            self.tables.dedup();
            let functions = std::mem::take(&mut self.functions);
            return self.forgivable(p.unlisted.into_iter().chain(functions).collect());
        }
        self.names = std::mem::take(&mut p.names);
        let detailed = DETAILED_KINDS.contains(&p.kind.as_str());
        if let Some(f) = facts {
            if (detailed || f.family.is_some()) && f.family != Some(p.kind.as_str()) {
                return self.disagree(format!(
                    "PostgreSQL reads a {} statement here and infraveil's parser {}: the readings disagree",
                    p.kind,
                    f.family.unwrap_or("another kind of statement")
                ));
            }
            // A call PostgreSQL's grammar made of SQL-standard syntax
            // (`EXTRACT(… FROM …)` is `pg_catalog.extract`) is no sign of a
            // misreading when it is a reviewed read-only built-in.
            let missed = p.called.iter().find(|c| {
                let bare = c.strip_prefix("pg_catalog.").unwrap_or(c);
                let syntax = c.starts_with("pg_catalog.")
                    && matches!(functions::lookup(bare), functions::Call::ReadOnly);
                !f.called.contains(bare) && !syntax
            });
            if let Some(missed) = missed {
                return self.disagree(format!(
                    "PostgreSQL reads a call to {missed}() that infraveil's parser does not see: the readings disagree"
                ));
            }
            if detailed && let Some(code) = f.strings.iter().find(|x| !p.strings.contains(*x)) {
                return self.disagree(format!(
                    "infraveil's parser reads {:?} as a string where PostgreSQL does not: the readings disagree",
                    code.chars().take(40).collect::<String>()
                ));
            }
        }
        for t in p.relations {
            if !self.tables.contains(&t) {
                if detailed && facts.is_some() {
                    return self.disagree(format!(
                        "PostgreSQL reads the table {t} that infraveil's parser does not see: the readings disagree"
                    ));
                }
                self.tables.push(t);
            }
        }
        if let Some(why) = p.unknown {
            return self.disagree(why);
        }
        self.raise_both(p.floor, &p.reason);
        self.forgivable(p.unlisted);
    }

    /// Calls to functions the reviewed table does not know: `unknown`,
    /// unless the role lists every one of them in `safe_functions`.
    fn forgivable(&mut self, unlisted: BTreeSet<String>) {
        for f in unlisted {
            if !self.functions.contains(&f) {
                self.functions.push(f.clone());
            }
            if self.class < Class::Unknown {
                self.class = Class::Unknown;
                self.reason = format!(
                    "calls {f}(), which infraveil does not know to be free of side effects \
                     (if it is, whoever maintains the infraveil policies can list it in the role's safe_functions)"
                );
            }
        }
    }
}

#[cfg(test)]
mod number_keys {
    use super::*;

    /// `sql` with every digit of every numeric literal changed (by
    /// `step`), in place: the rest of the text is untouched.
    fn vary(sql: &str, step: u32) -> Option<String> {
        use sqlparser::tokenizer::Token;
        let tokens = lexer::tokenize(sql).ok()?;
        // Token locations are (line, column) in characters, from 1.
        let mut starts = std::collections::HashMap::new();
        let (mut line, mut col) = (1u64, 1u64);
        for (i, c) in sql.char_indices() {
            starts.insert((line, col), i);
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        let mut out: Vec<char> = sql.chars().collect();
        let index: std::collections::HashMap<usize, usize> = sql
            .char_indices()
            .enumerate()
            .map(|(n, (b, _))| (b, n))
            .collect();
        for t in &tokens {
            if let Token::Number(n, _) = &t.token {
                let at = starts.get(&(t.span.start.line, t.span.start.column))?;
                let first = *index.get(at)?;
                for (k, c) in n.chars().enumerate() {
                    if let Some(d) = c.to_digit(10) {
                        out[first + k] = char::from_digit((d + step) % 10, 10)?;
                    }
                }
            }
        }
        Some(out.into_iter().collect())
    }

    fn summary(a: &Analysis) -> String {
        format!("{:?}", a.statements)
    }

    #[test]
    fn number_keys_classify_alike() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/classify");
        let mut keyed = 0;
        let mut shared = 0;
        for f in std::fs::read_dir(dir).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_none_or(|x| x != "sql") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for sql in text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
            {
                let Some(key) = number_shape_key(sql) else {
                    continue;
                };
                keyed += 1;
                let original = summary(&classify(sql));
                for step in [1, 5, 9] {
                    let Some(other) = vary(sql, step) else {
                        continue;
                    };
                    // Numbers in a name's arguments keep their digits: a
                    // text varied there has a key of its own.
                    if number_shape_key(&other).as_deref() != Some(key.as_str()) {
                        continue;
                    }
                    shared += 1;
                    assert_eq!(
                        summary(&classify(&other)),
                        original,
                        "{sql:?} and {other:?} share a key but classify differently"
                    );
                }
            }
        }
        assert!(keyed > 50, "only {keyed} corpus statements got a key");
        assert!(shared > 100, "only {shared} varied texts shared their key");
    }

    /// Every corpus text with a quick key, with its delimited digit runs
    /// changed: the same key, the same classification.
    #[test]
    fn quick_keys_classify_alike() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/classify");
        let mut keyed = 0;
        let mut texts: Vec<String> = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
            "UPDATE pgbench_accounts SET abalance = abalance + -4012 WHERE aid = 77;",
            "DELETE FROM t WHERE id = 3 OR 1=1",
            "DELETE FROM t WHERE 2 > 1",
            "SELECT * FROM t1, t2 WHERE t1.a = 10",
            "SELECT x FROM t LIMIT 10 OFFSET 20",
        ]
        .map(String::from)
        .to_vec();
        for f in std::fs::read_dir(dir).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_some_and(|x| x == "sql") {
                let text = std::fs::read_to_string(&path).unwrap();
                texts.extend(
                    text.lines()
                        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
                        .map(String::from),
                );
            }
        }
        for sql in &texts {
            let Some(key) = quick_shape_key(sql) else {
                continue;
            };
            keyed += 1;
            let original = summary(&classify(sql));
            for step in [1u8, 5, 9] {
                // Change every digit the key replaced (and only those).
                let k = key.as_bytes();
                let other: String = sql
                    .bytes()
                    .zip(&k[3..])
                    .map(|(c, &m)| {
                        if c.is_ascii_digit() && m == b'9' && k.len() == sql.len() + 3 {
                            (b'0' + (c - b'0' + step) % 10) as char
                        } else {
                            c as char
                        }
                    })
                    .collect();
                assert_eq!(
                    quick_shape_key(&other).as_deref(),
                    Some(key.as_str()),
                    "{sql}"
                );
                assert_eq!(
                    summary(&classify(&other)),
                    original,
                    "{sql:?} and {other:?} share a quick key but classify differently"
                );
            }
        }
        assert!(keyed > 20, "only {keyed} texts got a quick key");
        for none in [
            "SELECT * FROM t1",
            "SELECT 1; SELECT 2",
            "SELECT '1'",
            "SELECT 1 -- 2",
            "SELECT $1",
            "EXPLAIN (ANALYZE 0) DELETE FROM t",
            "SET statement_timeout = 0",
            "FETCH 5 FROM c",
            "SELECT 1e5",
            "SELECT \"t\" FROM x WHERE a = 1",
            "(SELECT 1)",
        ] {
            assert_eq!(quick_shape_key(none), None, "{none}");
        }
        assert_ne!(quick_shape_key("SELECT 1"), quick_shape_key("SELECT 10"));
    }

    /// Integers PostgreSQL's grammar or a type reads by value (type
    /// modifiers, function arguments) keep their digits in both keys, so
    /// `float(24)` never answers for `float(90)` (found by an attack).
    #[test]
    fn numbers_in_a_name_s_arguments_keep_their_digits() {
        for (a, b) in [
            (
                "SELECT CAST(a AS float(24)) FROM t",
                "SELECT CAST(a AS float(90)) FROM t",
            ),
            (
                "SELECT CAST(a AS float(1)) FROM t",
                "SELECT CAST(a AS float(0)) FROM t",
            ),
            (
                "SELECT CAST(a AS varchar(1000000000)) FROM t",
                "SELECT CAST(a AS varchar(3000000000)) FROM t",
            ),
            (
                "SELECT CAST(a AS timestamp(1000000000)) FROM t",
                "SELECT CAST(a AS timestamp(4294967296)) FROM t",
            ),
            (
                "SELECT a::s.in(5) FROM t WHERE id = 1",
                "SELECT a::s.in(7) FROM t WHERE id = 1",
            ),
        ] {
            for key in [quick_shape_key, number_shape_key] {
                assert!(
                    key(a).is_none() || key(a) != key(b),
                    "{a} and {b} share a key"
                );
            }
        }
        // Lists and expressions still vary freely.
        for (a, b) in [
            (
                "SELECT * FROM t WHERE id IN (1, 2)",
                "SELECT * FROM t WHERE id IN (3, 4)",
            ),
            ("INSERT INTO t VALUES (1, 2)", "INSERT INTO t VALUES (5, 6)"),
            (
                "SELECT * FROM t WHERE (id = 1)",
                "SELECT * FROM t WHERE (id = 2)",
            ),
        ] {
            assert!(quick_shape_key(a).is_some(), "{a}");
            assert_eq!(quick_shape_key(a), quick_shape_key(b), "{a}");
            assert_eq!(number_shape_key(a), number_shape_key(b), "{a}");
        }
    }

    /// Calls whose effects outlive a rollback are found as the parsers read
    /// them, whatever the spelling.
    #[test]
    fn calls_that_outlive_a_rollback_are_flagged() {
        for sql in [
            "SELECT NextVal('s')",
            r#"SELECT U&"setva\006C"('s', 5)"#,
            "SELECT pg_catalog.setval('s', 1)",
            "INSERT INTO t SELECT dblink_exec('dbname=x', 'SELECT 1')",
            "INSERT INTO t VALUES (nextval('s'))",
        ] {
            let a = classify(sql);
            assert!(a.statements.iter().any(|s| s.outlives_rollback), "{sql}");
        }
        for sql in ["INSERT INTO t VALUES (1)", "UPDATE t SET nextval_count = 2"] {
            let a = classify(sql);
            assert!(!a.statements.iter().any(|s| s.outlives_rollback), "{sql}");
        }
    }

    #[test]
    fn only_single_data_statements_with_numbers_get_keys() {
        assert!(
            number_shape_key("SELECT abalance FROM pgbench_accounts WHERE aid = 4821").is_some()
        );
        assert_eq!(
            number_shape_key("SELECT 1 WHERE aid = 4821"),
            number_shape_key("SELECT 7 WHERE aid = 1234")
        );
        assert_ne!(
            number_shape_key("SELECT 1 WHERE aid = 4821"),
            number_shape_key("SELECT 1 WHERE aid = 48213")
        );
        assert_ne!(
            number_shape_key("SELECT 1.5"),
            number_shape_key("SELECT 15")
        );
        for none in [
            "SELECT 1; SELECT 2",
            "EXPLAIN (ANALYZE 0) DELETE FROM t",
            "FETCH -1 FROM c",
            "SET statement_timeout = 0",
            "SELECT abalance FROM t WHERE aid = $1",
            "(SELECT 1)",
            "\"select\" 1",
            "SELECT 'it''s'",
        ] {
            assert_eq!(number_shape_key(none), None, "{none}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Left-deep trees (operator chains, casts, subscripts) are built in
    /// loops the parser's recursion limit does not see; walking and dropping
    /// them must not overflow a session's stack, however long the chain.
    #[test]
    fn deep_trees_do_not_overflow_a_small_stack() {
        let cases = [
            format!("SELECT 1{}", "+1".repeat(15_000)),
            format!("SELECT 1{}", "+1".repeat(30)),
            format!("SELECT 1{}", "+1".repeat(200_000)),
            format!("DELETE FROM t WHERE id=1{}", " OR id=1".repeat(9_000)),
            format!("SELECT 1{}", "::int".repeat(15_000)),
            format!("SELECT a{}", "->'x'".repeat(15_000)),
            format!("SELECT {}1{}", "(".repeat(50_000), ")".repeat(50_000)),
            format!("SELECT {}1", "NOT ".repeat(50_000)),
        ];
        let t = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                cases
                    .iter()
                    .map(|c| classify(c).class())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        let classes = t.join().expect("no stack overflow");
        // PostgreSQL's reading of a tree nested this deep cannot be
        // checked (its protobuf is nested past prost's limit): unknown.
        assert_eq!(classes[0], Class::Unknown);
        assert_eq!(classes[1], Class::Read);
        assert_eq!(classes[2], Class::Unknown, "over the operator cap");
        assert_eq!(classes[3], Class::Write);
        assert_eq!(classes[6], Class::Unknown, "over the nesting limit");
    }
}
