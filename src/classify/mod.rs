//! The classifier: SQL text in, per statement a [`Class`], the tables it
//! touches and a reason out. No I/O, so the proxy and `veilctl check` share it.
//!
//! Parsing is sqlparser's (PostgreSQL dialect); `lexer` handles what must
//! happen at token level, `walk` the tree, `bounds` unbounded DELETE/UPDATE,
//! `functions` and `settings` the reviewed lists. It fails closed: text the
//! parser rejects and nodes the walk does not know are `unknown`, never
//! `read`.

mod bounds;
pub(crate) mod functions;
mod lexer;
mod redact;
mod settings;
mod walk;

pub use redact::redact;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Read,
    Write,
    Ddl,
    Destructive,
    Privileged,
    Unknown,
}

impl Class {
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
    let all = |stmts: Vec<sqlparser::ast::Statement>| -> Vec<StatementClass> {
        stmts
            .iter()
            .map(|s| walk::Walker::classify(s, depth))
            .collect()
    };
    let chunks = match parse(tokens) {
        Ok(stmts) => {
            return Analysis {
                statements: all(stmts),
            };
        }
        // It tokenized a moment ago; should it not now, fail closed.
        Err(e) => match lexer::tokenize(sql) {
            Ok(t) => lexer::split(t),
            Err(_) => {
                return Analysis {
                    statements: vec![unknown(e)],
                };
            }
        },
    };
    let statements = chunks
        .into_iter()
        .flat_map(|chunk| match parse(chunk.clone()) {
            Ok(stmts) => all(stmts),
            Err(e) => {
                let (class, reason) = lexer::unparsed(&chunk, &e);
                let mut s = unknown(reason);
                s.class = class;
                s.base_class = class;
                vec![s]
            }
        })
        .collect();
    Analysis { statements }
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
        assert_eq!(classes[0], Class::Read);
        assert_eq!(classes[1], Class::Unknown, "over the operator cap");
        assert_eq!(classes[2], Class::Write);
        assert_eq!(classes[5], Class::Unknown, "over the nesting limit");
    }
}
