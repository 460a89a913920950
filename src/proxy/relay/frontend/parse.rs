//! `Parse`: the statement is judged and recorded when it is prepared; what
//! its executions need ([`crate::proxy::state::Gate`]) is kept with it in
//! the session model. Parsing runs nothing, so a held statement is
//! prepared and each `Bind` of it asks for approval.

use std::sync::Arc;

use bytes::BytesMut;

use super::judge::{effects, gate, judge};
use super::{Flow, Frontend, bad_message, forward, refused, too_many_names};
use crate::classify::Class;
use crate::policy::inspect::{Decision, Origin};
use crate::protocol::Frame;
use crate::proxy::relay::denials::Carrier;
use crate::proxy::relay::{Ctx, RelayEnd};
use crate::proxy::state::Statement;

/// Split a `Parse` body into (statement name, query text).
fn parse_body(body: &[u8]) -> Option<(&[u8], &[u8], Vec<u32>)> {
    let name_end = body.iter().position(|&b| b == 0)?;
    let rest = &body[name_end + 1..];
    let q_end = rest.iter().position(|&b| b == 0)?;
    // After the query: i16 parameter count and that many u32 OIDs.
    let tail = &rest[q_end + 1..];
    if tail.len() < 2 {
        return None;
    }
    let n = i16::from_be_bytes([tail[0], tail[1]]);
    if n < 0 || tail.len() != 2 + 4 * n as usize {
        return None;
    }
    let types = tail[2..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((&body[..name_end], &rest[..q_end], types))
}

pub(super) fn on_parse(
    frame: Frame,
    out: &mut BytesMut,
    ctx: &Ctx<'_>,
    state: &mut Frontend<'_>,
) -> Result<Flow, RelayEnd> {
    let Some((name, raw, param_types)) = parse_body(frame.body()) else {
        return Err(bad_message("Parse"));
    };
    // A name that is not valid UTF-8 is refused with the statement.
    let name_ok = std::str::from_utf8(name).is_ok();
    let name = String::from_utf8_lossy(name).into_owned();
    // The model keeps what PostgreSQL keeps; a session may not make it
    // grow without bound.
    if state.model.oversized() {
        let e = too_many_names();
        state.model.parse(&name, refused());
        ctx.denials
            .refuse(out, Carrier::Parse { name: name.into() }, e)?;
        return Ok(Flow::Continue);
    }
    let origin = Origin::Parse { statement: &name };
    // Read before judging: a reload in between makes the stamp older than
    // the judgement, and the Bind judges again (never the other way).
    let generation = ctx
        .shared
        .policy_generation
        .load(std::sync::atomic::Ordering::Acquire);
    let Some(mut j) = judge(raw, name_ok, origin, ctx, state.model) else {
        return Ok(Flow::Stall(frame));
    };
    // Parsing runs nothing: a held statement is prepared, and each Bind of
    // it asks for an approval with its parameter values. Without approvals
    // configured it could never run: refused at once.
    if let Decision::Hold(h) = &j.inspection.decision
        && ctx.shared.approvals.is_none()
    {
        j.inspection.decision = Decision::Deny(h.error.clone());
    }
    let n = j.record(&mut state.trail, "parse");
    let class = j.inspection.class.unwrap_or(Class::Unknown);
    match std::mem::replace(&mut j.inspection.decision, Decision::Allow) {
        Decision::Deny(e) => {
            state.model.parse(&name, refused());
            ctx.denials
                .refuse(out, Carrier::Parse { name: name.into() }, e)?;
            Ok(Flow::Continue)
        }
        decision => {
            let text: Arc<str> = Arc::from(&*j.logged);
            // One statement per Parse: what it defines, if anything, is
            // applied when an execution of it completes.
            let mut effects = effects(
                std::mem::take(&mut j.inspection.effects),
                || text.clone(),
                n,
            );
            let effect = effects.pop().filter(|_| effects.is_empty());
            let statement = Arc::new(Statement {
                text,
                record: n,
                class: Some(class),
                gate: gate(class, decision),
                effect,
                param_types,
                rollback_undoes: j.inspection.rollback_undoes,
                row_check: j.inspection.row_check.take(),
                generation,
            });
            state.model.parse(&name, statement);
            forward(out, &frame)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn parse_body_splits_and_validates() {
        let mut b = BytesMut::new();
        b.put_slice(b"s1\0select $1\0");
        b.put_i16(1);
        b.put_u32(23);
        assert_eq!(
            parse_body(&b),
            Some((&b"s1"[..], &b"select $1"[..], vec![23]))
        );
        assert_eq!(parse_body(b"s1\0select"), None);
        assert_eq!(parse_body(b"\0select 1\0\x00\x05"), None);
    }
}
