//! The session model against PostgreSQL's answers, message by message.

use super::*;
use bytes::{BufMut, BytesMut};

use crate::audit::Event;
use crate::protocol::Frame;

fn frame(tag: u8, body: &[u8]) -> Frame {
    let mut b = BytesMut::new();
    b.put_u8(tag);
    b.put_i32(4 + body.len() as i32);
    b.put_slice(body);
    Frame { bytes: b }
}

fn error(code: &str) -> Frame {
    let mut body = Vec::new();
    body.extend_from_slice(b"SERROR\0C");
    body.extend_from_slice(code.as_bytes());
    body.extend_from_slice(b"\0Mboom\0\0");
    frame(b'E', &body)
}

fn read(n: u64) -> Arc<Statement> {
    Statement::new(Arc::from("SELECT 1"), n, Some(Class::Read), Gate::Free)
}

fn outcomes(events: Vec<Event>) -> Vec<(u64, &'static str)> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Outcome {
                statement, outcome, ..
            } => (statement, outcome),
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn names_change_only_when_postgres_confirms() {
    let m = SessionState::new(1, "a");
    m.parse("s1", read(1));
    m.sync();
    // Asked, not answered: the name is unsettled for the next segment.
    assert!(matches!(m.statement("s1"), Lookup::Unsettled));
    m.on_backend(&frame(b'1', b"")).unwrap();
    m.on_backend(&frame(b'Z', b"I")).unwrap();
    assert!(matches!(m.statement("s1"), Lookup::Found(_)));
    // A second Parse of s1 that PostgreSQL refuses keeps the first.
    m.parse("s1", read(2));
    assert!(matches!(m.statement("s1"), Lookup::Found(s) if s.record == 2));
    m.sync();
    m.on_backend(&error("42P05")).unwrap();
    m.on_backend(&frame(b'Z', b"I")).unwrap();
    assert!(matches!(m.statement("s1"), Lookup::Found(s) if s.record == 1));
}

#[test]
fn messages_after_an_error_are_skipped_until_sync() {
    let m = SessionState::new(1, "a");
    m.parse("s1", read(1));
    m.sync();
    m.on_backend(&frame(b'1', b"")).unwrap();
    m.on_backend(&frame(b'Z', b"I")).unwrap();
    // A failing Bind, a Close and a Query PostgreSQL will skip.
    m.bind("", read(1), None);
    m.close(false, "s1");
    m.on_backend(&error("08P01")).unwrap();
    assert!(matches!(m.statement("s1"), Lookup::Skipped));
    m.query(7, Vec::new(), None);
    m.sync();
    let done = outcomes(m.on_backend(&frame(b'Z', b"I")).unwrap());
    assert_eq!(done, vec![(7, "skipped")]);
    assert_eq!(m.names().0, vec!["s1"], "the skipped Close changed nothing");
}

#[test]
fn outcomes_pair_with_their_own_requests() {
    let m = SessionState::new(1, "a");
    m.execute(1, None, None);
    m.execute(2, None, None);
    m.execute(3, None, None);
    m.sync();
    m.execute(4, None, None);
    m.sync();
    let o = |f| outcomes(m.on_backend(&f).unwrap());
    assert_eq!(o(frame(b'C', b"UPDATE 1\0")), vec![(1, "ok")]);
    assert_eq!(o(error("23505")), vec![(2, "error")]);
    assert_eq!(o(frame(b'Z', b"I")), vec![(3, "skipped")]);
    assert_eq!(o(frame(b'C', b"SELECT 7\0")), vec![(4, "ok")]);
    assert!(o(frame(b'Z', b"I")).is_empty());
}

#[test]
fn sql_prepare_and_deallocate_share_the_namespace() {
    let m = SessionState::new(1, "a");
    let effects = vec![
        Effect {
            what: SessionEffect::Prepare("d".into()),
            statement: Some(read(5)),
        },
        Effect {
            what: SessionEffect::None,
            statement: None,
        },
    ];
    m.query(5, effects, None);
    m.on_backend(&frame(b'C', b"PREPARE\0")).unwrap();
    m.on_backend(&frame(b'C', b"SELECT 1\0")).unwrap();
    m.on_backend(&frame(b'Z', b"I")).unwrap();
    assert!(matches!(m.statement("d"), Lookup::Found(s) if s.record == 5));
    m.close(false, "d");
    m.sync();
    m.on_backend(&frame(b'3', b"")).unwrap();
    m.on_backend(&frame(b'Z', b"I")).unwrap();
    assert!(matches!(m.statement("d"), Lookup::Missing));
    // A tag the model cannot place ends the session.
    m.query(6, Vec::new(), None);
    assert!(m.on_backend(&frame(b'C', b"DEALLOCATE ALL\0")).is_err());
}

#[test]
fn a_sync_during_copy_is_ignored_like_postgres_does() {
    let m = SessionState::new(1, "a");
    m.bind("", read(1), None);
    m.execute(1, None, None);
    m.sync();
    m.on_backend(&frame(b'2', b"")).unwrap();
    m.on_backend(&frame(b'G', b"")).unwrap();
    m.copy_end();
    m.sync();
    m.on_backend(&frame(b'C', b"COPY 3\0")).unwrap();
    m.on_backend(&frame(b'Z', b"I")).unwrap();
    assert!(
        matches!(m.statement("x"), Lookup::Missing),
        "nothing left unanswered"
    );
}

#[test]
fn an_approved_portal_runs_once() {
    let m = SessionState::new(1, "a");
    let p = m.bind("", read(1), Some("a-1".into()));
    assert!(p.take_run());
    assert!(!p.take_run());
    let free = m.bind("", read(1), None);
    assert!(free.take_run() && free.take_run());
}
