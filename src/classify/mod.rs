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
//! what PostgreSQL's tree implies; `reconcile` holds the two readings
//! against each other. `names` reads names the way both the walk and
//! `bounds` need, `functions` and `settings` are the reviewed lists, and
//! `keys` makes the cache keys. It fails closed: text either parser rejects
//! and nodes a walk does not know are `unknown`, never `read`.

mod bounds;
pub(crate) mod functions;
mod keys;
mod lexer;
#[doc(hidden)]
pub mod mutate;
mod names;
pub mod objects;
mod pg;
mod reconcile;
mod redact;
mod settings;
mod walk;

pub use keys::{number_shape_key, quick_shape_key};
pub use redact::redact;
pub use settings::{names_sql_ascii, names_utf8};

pub(crate) use names::resolve;

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
    /// Changes rows that exist (an UPDATE, DELETE, MERGE or upsert anywhere
    /// in it, as PostgreSQL's parser reads it), for row limits.
    #[serde(skip)]
    pub changes_rows: bool,
    /// `EXPLAIN` can plan it as written (a SELECT, INSERT, UPDATE, DELETE
    /// or MERGE at the top).
    #[serde(skip)]
    pub explainable: bool,
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

/// Each statement of `sql` as a text of its own, split by PostgreSQL's
/// parser, so each can be planned alone (`EXPLAIN` takes one statement);
/// `None` if it does not parse.
pub fn statement_texts(sql: &str) -> Option<Vec<String>> {
    pg::split(sql).ok()
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
        changes_rows: false,
        explainable: false,
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
        statements: reconcile::reconcile(sql, read, depth),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Left-deep trees (operator chains, casts, subscripts) are built in
    /// loops the parser's recursion limit does not see; walking and dropping
    /// them must not overflow a session's stack, however long the chain.
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
