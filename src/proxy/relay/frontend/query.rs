//! `Query`: a simple-protocol string is judged, recorded, and forwarded,
//! refused (replaced) or held for approval.

use std::sync::Arc;

use bytes::BytesMut;

use super::judge::{count, effects, judge};
use super::{AfterHold, EstimateMessage, Flow, Frontend, HeldMessage, bad_message, forward};
use crate::policy::inspect::{Decision, Origin};
use crate::protocol::Frame;
use crate::proxy::estimate::Sized;
use crate::proxy::relay::denials::Carrier;
use crate::proxy::relay::{Ctx, RelayEnd};
use crate::proxy::state::Statement;

pub(super) fn on_query(
    frame: Frame,
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    let Some((0, raw)) = frame.body().split_last() else {
        return Err(bad_message("Query"));
    };
    let Some(mut j) = judge(raw, true, Origin::SimpleQuery, ctx, state.model) else {
        return Ok(Flow::Stall(frame));
    };
    // A limited role's write is planned first; over a limit, the
    // decision is the one for `destructive`.
    if let Some(check) = j.inspection.row_check.take() {
        match state.sized_for(&frame) {
            None => {
                return Ok(Flow::Estimate(Box::new(EstimateMessage {
                    frame,
                    check,
                    types: Vec::new(),
                    params: Vec::new(),
                })));
            }
            Some(Sized::Within(_)) => {}
            Some(Sized::Over(why)) => check.apply_over(&why, &mut j.inspection),
        }
        count(ctx.shared, &j.inspection);
    }
    let n = j.record(&mut state.trail, "query");
    let defines = std::mem::take(&mut j.inspection.effects);
    let sql = &j.logged;
    match std::mem::replace(&mut j.inspection.decision, Decision::Allow) {
        Decision::Allow => {
            let text: Option<Arc<str>> = (!defines.is_empty()).then(|| Arc::from(&**sql));
            let effects = effects(defines, || text.clone().unwrap_or_default(), n);
            state.model.query(n, effects, None);
            forward(out, &frame)
        }
        Decision::Deny(e) => {
            state.model.query(n, Vec::new(), None);
            ctx.denials.refuse(out, Carrier::Query, e)?;
            Ok(Flow::Continue)
        }
        Decision::Hold(held) => {
            let text: Arc<str> = Arc::from(&**sql);
            let effects = effects(defines, || text.clone(), n);
            let sql = Arc::from(with_executed(sql, &j.executes));
            drop(j);
            Ok(Flow::Hold(Box::new(HeldMessage {
                frame,
                held,
                sql,
                param_types: Vec::new(),
                then: AfterHold::Query { record: n, effects },
            })))
        }
    }
}

/// The text approvers see and approve for a string that runs prepared
/// statements: it names what each `EXECUTE` runs, so redefining the name
/// afterwards needs an approval of its own.
fn with_executed(sql: &str, executes: &[(String, Arc<Statement>)]) -> String {
    let mut out = sql.to_owned();
    for (name, s) in executes {
        out.push_str(&format!("\n-- where {name} is: {}", s.text));
        if s.param_types.iter().any(|&t| t != 0) {
            out.push_str(&format!(" (parameter types {:?})", s.param_types));
        }
    }
    out
}
