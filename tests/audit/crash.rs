//! `kill -9` under write load of every kind loses no acknowledged record.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::common::child::Firewall;
use super::common::*;
use tokio_postgres::types::ToSql;

/// How a writer in the crash test writes its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Style {
    /// One simple-protocol `INSERT` a transaction (autocommit).
    Simple,
    /// A named prepared statement, Bind/Execute each row (autocommit).
    Prepared,
    /// `BEGIN`, two `INSERT`s and `COMMIT`, each its own `Query`: the
    /// inserts go upstream at once, the `COMMIT` waits for their records.
    Block,
    /// `BEGIN; INSERT …; COMMIT` in one string.
    OneString,
    /// A transaction of prepared executions (extended protocol).
    PreparedBlock,
    /// The same with the executions pipelined.
    Pipelined,
    /// `PREPARE TRANSACTION`, then `COMMIT PREPARED`.
    TwoPhase,
}

const STYLES: [Style; 9] = [
    Style::Simple,
    Style::Simple,
    Style::Prepared,
    Style::Prepared,
    Style::Block,
    Style::OneString,
    Style::PreparedBlock,
    Style::Pipelined,
    Style::TwoPhase,
];

/// Write rows `(w, i)` in `style` until the connection fails; each
/// committed row goes into `acked` once its commit is answered.
async fn write_rows(
    client: tokio_postgres::Client,
    w: i32,
    style: Style,
    acked: Arc<std::sync::Mutex<BTreeSet<(i32, i32)>>>,
) {
    let marker = format!("INSERT INTO crash /* writer {w} */ VALUES ($1, $2)");
    let stmt = match style {
        Style::Prepared | Style::PreparedBlock | Style::Pipelined => {
            Some(client.prepare(&marker).await.unwrap())
        }
        _ => None,
    };
    let q = |w: i32, i: i32| format!("INSERT INTO crash VALUES ({w}, {i})");
    for i in (0..).step_by(2) {
        let rows = [(w, i), (w, i + 1)];
        let j = i + 1;
        let done: Result<usize, tokio_postgres::Error> = async {
            match style {
                Style::Simple => {
                    client.batch_execute(&q(w, i)).await?;
                    Ok(1)
                }
                Style::Prepared => {
                    client.execute(stmt.as_ref().unwrap(), &[&w, &i]).await?;
                    Ok(1)
                }
                Style::Block => {
                    client.batch_execute("BEGIN").await?;
                    client.batch_execute(&q(w, i)).await?;
                    client.batch_execute(&q(w, i + 1)).await?;
                    client.batch_execute("COMMIT").await?;
                    Ok(2)
                }
                Style::OneString => {
                    client
                        .batch_execute(&format!("BEGIN; {}; {}; COMMIT", q(w, i), q(w, i + 1)))
                        .await?;
                    Ok(2)
                }
                Style::PreparedBlock => {
                    client.batch_execute("BEGIN").await?;
                    let s = stmt.as_ref().unwrap();
                    client.execute(s, &[&w, &i]).await?;
                    client.execute(s, &[&w, &j]).await?;
                    client.batch_execute("COMMIT").await?;
                    Ok(2)
                }
                Style::Pipelined => {
                    client.batch_execute("BEGIN").await?;
                    let s = stmt.as_ref().unwrap();
                    let (first, second): (&[&(dyn ToSql + Sync)], &[&(dyn ToSql + Sync)]) =
                        (&[&w, &i], &[&w, &j]);
                    let (a, b) = tokio::join!(client.execute(s, first), client.execute(s, second));
                    a?;
                    b?;
                    client.batch_execute("COMMIT").await?;
                    Ok(2)
                }
                Style::TwoPhase => {
                    client.batch_execute("BEGIN").await?;
                    client.batch_execute(&q(w, i)).await?;
                    client
                        .batch_execute(&format!("PREPARE TRANSACTION 'crash_{w}_{i}'"))
                        .await?;
                    client
                        .batch_execute(&format!("COMMIT PREPARED 'crash_{w}_{i}'"))
                        .await?;
                    Ok(1)
                }
            }
        }
        .await;
        match done {
            Ok(n) => acked.lock().unwrap().extend(rows[..n].iter().copied()),
            Err(_) => break,
        }
    }
}

/// Pull the plug on the firewall under write load of every kind: every row
/// PostgreSQL committed has its durable record, whether its statement went
/// upstream after its record was durable (autocommit) or before, inside a
/// block whose commit waited for it.
#[tokio::test]
async fn kill_9_under_write_load_loses_no_acknowledged_record() {
    crash(&STYLES, "100ms", 600).await;
}

/// Only explicit blocks, a few of them, and records nobody waits for held
/// for 5 s: nothing but the commits makes the log durable, so a `COMMIT`
/// that did not wait for the records of the inserts before it would leave
/// every row without one.
#[tokio::test]
async fn kill_9_inside_blocks_finds_every_committed_row_recorded() {
    crash(
        &[Style::Block, Style::PreparedBlock, Style::Pipelined],
        "5s",
        30,
    )
    .await;
}

/// Write with a writer per style until `rows` are committed, kill -9 the
/// firewall, and check the log holds every row PostgreSQL committed.
async fn crash(styles: &[Style], read_window: &str, rows: usize) {
    // Its own cluster: two-phase commit needs max_prepared_transactions.
    let c = private_cluster(infraveil::sandbox::ClusterOptions {
        settings: vec![("max_prepared_transactions".into(), "20".into())],
        ..Default::default()
    });
    let db = "audit_crash";
    c.psql("postgres", &format!("CREATE DATABASE {db} OWNER app_owner"))
        .unwrap();
    c.psql(
        db,
        "CREATE TABLE crash (w int, i int); ALTER TABLE crash OWNER TO app_owner;",
    )
    .unwrap();
    let mut fw = Firewall::start_before(c.port, read_window).await;

    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut tasks = vec![];
    for (w, style) in styles.iter().copied().enumerate() {
        let acked = acked.clone();
        let client = fw.connect(db).await;
        tasks.push(tokio::spawn(async move {
            write_rows(client, w as i32, style, acked).await;
        }));
    }
    // Let the load run until every writer has committed, then pull the
    // plug mid-stream.
    loop {
        {
            let a = acked.lock().unwrap();
            let writers: BTreeSet<i32> = a.iter().map(|(w, _)| *w).collect();
            if a.len() >= rows && writers.len() == styles.len() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fw.kill_9().await;
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // PostgreSQL's view: every row committed, acknowledged or not.
    let rows: BTreeSet<(i32, i32)> = c
        .psql(db, "SELECT w, i FROM crash")
        .unwrap()
        .lines()
        .map(|l| {
            let (w, i) = l.split_once('|').unwrap();
            (w.parse().unwrap(), i.parse().unwrap())
        })
        .collect();
    assert!(
        acked.is_subset(&rows),
        "PostgreSQL kept every acknowledged row"
    );

    // Restart on the same data dir: the chain verifies, continues, and
    // holds a record for every row that reached PostgreSQL.
    let all = fw.restart_and_export().await;
    // Rows whose text is in a statement record (simple protocol).
    let recorded: BTreeSet<(i32, i32)> = all
        .iter()
        .filter(|e| e["type"] == "statement" && e["decision"] == "allow")
        .flat_map(|e| {
            let text = e["text"].as_str().unwrap_or_default().to_owned();
            text.split("INSERT INTO crash VALUES (")
                .skip(1)
                .filter_map(|t| {
                    let (w, i) = t.split_once(')')?.0.split_once(", ")?;
                    Some((w.parse().ok()?, i.parse().ok()?))
                })
                .collect::<Vec<(i32, i32)>>()
        })
        .collect();
    let by_text = |w: i32| {
        matches!(
            styles[w as usize],
            Style::Simple | Style::Block | Style::OneString | Style::TwoPhase
        )
    };
    let missing: Vec<_> = rows
        .iter()
        .filter(|(w, _)| by_text(*w))
        .filter(|r| !recorded.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "rows in PostgreSQL without an audit record: {missing:?}"
    );
    // Prepared executions carry no text: each has a durable
    // `statement.execute` record, so there are at least as many as rows.
    for (w, style) in styles.iter().enumerate() {
        if by_text(w as i32) {
            continue;
        }
        let marker = format!("/* writer {w} */");
        let parse = all
            .iter()
            .find(|e| e["type"] == "statement" && e["text"].as_str().unwrap().contains(&marker))
            .expect("the prepared statement's record");
        assert_eq!(parse["via"], "parse");
        let executes = all
            .iter()
            .filter(|e| {
                e["type"] == "statement.execute"
                    && e["session"] == parse["session"]
                    && e["statement"] == parse["statement"]
            })
            .count();
        let written = rows.iter().filter(|(rw, _)| *rw == w as i32).count();
        assert!(written > 0, "writer {w} ({style:?}) wrote");
        assert!(
            executes >= written,
            "writer {w} ({style:?}): {written} rows but {executes} execute records"
        );
    }
    for w in 0..styles.len() as i32 {
        assert!(
            rows.iter().any(|(rw, _)| *rw == w),
            "writer {w} committed rows"
        );
    }
    let starts = all.iter().filter(|e| e["type"] == "daemon.start").count();
    let stops = all.iter().filter(|e| e["type"] == "daemon.stop").count();
    assert_eq!(
        (starts, stops),
        (2, 0),
        "a start after the crash, no stop before it"
    );
}
