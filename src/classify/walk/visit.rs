//! sqlparser's visitor hooks: every statement, query, table factor,
//! relation, expression and value of the tree passes through here, however
//! deeply nested, and raises the statement's class or records a fact.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArguments, ObjectName, Query, Select, Statement, TableFactor, Value, Visitor,
};

use super::{CteScope, Walker};
use crate::classify::Class;
use crate::classify::names::{dotted, normalize_ident};

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        self.statement(s);
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if self
            .explain_only
            .last()
            .is_some_and(|p| std::ptr::eq(*p, s))
        {
            self.explain_only.pop();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        // Entering the i-th CTE body: only the CTEs before it are in scope
        // (all of them for WITH RECURSIVE).
        if let Some(top) = self.ctes.last_mut()
            && let Some(i) = top.bodies.iter().position(|b| std::ptr::eq(*b, q))
        {
            top.visible = top.visible.max(i);
        }
        if let Some(with) = &q.with {
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|c| normalize_ident(&c.alias.name))
                .collect();
            let visible = if with.recursive { names.len() } else { 0 };
            self.ctes.push(CteScope {
                query: q,
                bodies: with
                    .cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
                names,
                visible,
            });
        }
        if !q.locks.is_empty() {
            self.raise(Class::Write, "SELECT … FOR UPDATE/SHARE locks rows");
        }
        self.table_commands(&q.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if self.ctes.last().is_some_and(|s| std::ptr::eq(s.query, q)) {
            self.ctes.pop();
        }
        if let Some(top) = self.ctes.last_mut()
            && let Some(i) = top.bodies.iter().position(|b| std::ptr::eq(*b, q))
        {
            top.visible = top.visible.max(i + 1);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            let mut created = Vec::new();
            for t in &into.targets {
                match t {
                    Expr::Identifier(i) => created.push(ObjectName::from(vec![i.clone()])),
                    Expr::CompoundIdentifier(p) => created.push(ObjectName::from(p.clone())),
                    _ => {}
                }
            }
            for n in &created {
                self.table(n);
            }
            let names: Vec<String> = created.iter().map(dotted).collect();
            self.raise(
                Class::Ddl,
                format!("SELECT … INTO creates table {}", names.join(", ")),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            // `FROM f(…)`: the visitor reports `f` as a relation next.
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => {
                self.not_relations.push(name);
                self.call(name, &args.args);
            }
            TableFactor::Function { name, args, .. } => self.call(name, args),
            TableFactor::UNNEST { .. } => {
                self.facts.called.insert("unnest".to_owned());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, n: &ObjectName) -> ControlFlow<()> {
        if let Some(i) = self.not_relations.iter().position(|p| std::ptr::eq(*p, n)) {
            self.not_relations.swap_remove(i);
            return ControlFlow::Continue(());
        }
        self.relation(n);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        // Syntax sqlparser keeps as its own nodes and PostgreSQL's grammar
        // turns into function calls: record the call PostgreSQL will make.
        let builtin = match e {
            Expr::Floor { .. } => Some("floor"),
            Expr::Ceil { .. } => Some("ceil"),
            Expr::AtTimeZone { .. } => Some("timezone"),
            Expr::Extract { .. } => Some("extract"),
            Expr::Substring { .. } => Some("substring"),
            Expr::Position { .. } => Some("position"),
            Expr::Overlay { .. } => Some("overlay"),
            Expr::Trim { .. } => Some("btrim"),
            _ => None,
        };
        if let Some(name) = builtin {
            self.facts.called.insert(name.to_owned());
        }
        match e {
            Expr::Function(f) => match &f.args {
                FunctionArguments::List(l) => self.call(&f.name, &l.args),
                _ => self.call(&f.name, &[]),
            },
            Expr::BinaryOp {
                op: sqlparser::ast::BinaryOperator::PGCustomBinaryOperator(op),
                ..
            } if !(op.len() == 2
                && op[0].eq_ignore_ascii_case("pg_catalog")
                && crate::classify::pg::is_builtin_operator(&op[1])) =>
            {
                self.raise(
                    Class::Unknown,
                    format!("OPERATOR({}) may call any function", op.join(".")),
                )
            }
            Expr::BinaryOp {
                op: sqlparser::ast::BinaryOperator::Custom(op),
                ..
            } if !crate::classify::pg::is_builtin_operator(op) => self.raise(
                Class::Unknown,
                format!(
                    "{op} is not one of PostgreSQL's built-in operators: user code, or text PostgreSQL reads differently"
                ),
            ),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, v: &sqlparser::ast::ValueWithSpan) -> ControlFlow<()> {
        match &v.value {
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::UnicodeStringLiteral(s) => {
                self.facts.strings.insert(s.clone());
            }
            Value::DollarQuotedString(d) => {
                self.facts.strings.insert(d.value.clone());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
