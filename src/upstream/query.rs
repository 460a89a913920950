//! The firewall's own small queries on an upstream connection (approval
//! previews, row estimates), never client traffic: a simple query, or one
//! statement through the extended protocol with parameter values exactly
//! as a client's `Bind` carried them.

use bytes::{Bytes, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::extendedquery::{Bind, Execute, Parse, Sync};
use tokio::io::AsyncWriteExt;

use super::{Upstream, UpstreamError, next};
use crate::protocol::ErrorFields;

/// Rows of a query, every value as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// One parameter value: its format (`true`: binary) and bytes (`None`: NULL).
pub type Param = (bool, Option<Bytes>);

impl Upstream {
    /// Run one simple query and collect its rows as text.
    /// An `ErrorResponse` becomes `Err` with PostgreSQL's message.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Rows, UpstreamError> {
        let mut buf = BytesMut::new();
        pgwire::messages::simplequery::Query::new(sql.to_owned()).encode(&mut buf)?;
        self.send_and_collect(buf).await
    }

    /// Run `sql` as one unnamed prepared statement (a `Parse` holds one
    /// statement: PostgreSQL refuses more), bound with `params`, results in
    /// text.
    pub async fn extended_query(
        &mut self,
        sql: &str,
        types: &[u32],
        params: &[Param],
    ) -> Result<Rows, UpstreamError> {
        let mut buf = BytesMut::new();
        encode_extended(&mut buf, sql, types, params)?;
        self.send_and_collect(buf).await
    }

    /// Several [`Upstream::extended_query`]s in one write (one round
    /// trip), each with its own `Sync`, so one failing does not skip the
    /// others: each has its rows or PostgreSQL's message.
    pub async fn pipeline(
        &mut self,
        queries: &[(&str, &[u32], &[Param])],
    ) -> Result<Vec<Result<Rows, String>>, UpstreamError> {
        let mut buf = BytesMut::new();
        for (sql, types, params) in queries {
            encode_extended(&mut buf, sql, types, params)?;
        }
        self.reader.get_mut().write_all(&buf).await?;
        self.reader.get_mut().flush().await?;
        let mut out = Vec::with_capacity(queries.len());
        for _ in queries {
            out.push(match self.collect().await {
                Ok(rows) => Ok(rows),
                Err(UpstreamError::Query(m)) => Err(m),
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }

    async fn send_and_collect(&mut self, buf: BytesMut) -> Result<Rows, UpstreamError> {
        self.reader.get_mut().write_all(&buf).await?;
        self.reader.get_mut().flush().await?;
        self.collect().await
    }

    /// Rows up to the next `ReadyForQuery`; an `ErrorResponse` is `Err`.
    async fn collect(&mut self) -> Result<Rows, UpstreamError> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = next(&mut self.reader).await?;
            match frame.tag() {
                b'D' => rows.push(
                    data_row(frame.body())
                        .ok_or_else(|| UpstreamError::Protocol("malformed DataRow".into()))?,
                ),
                b'E' => {
                    let fields = ErrorFields::decode(&frame.bytes);
                    let message = fields
                        .as_ref()
                        .and_then(|f| f.message())
                        .unwrap_or("error without a message")
                        .to_owned();
                    error = Some(message);
                }
                b'Z' => break,
                // RowDescription, CommandComplete, ParseComplete,
                // BindComplete, notices, parameter status.
                _ => {}
            }
        }
        match error {
            Some(m) => Err(UpstreamError::Query(m)),
            None => Ok(rows),
        }
    }
}

/// Parse, Bind, Execute and Sync of one unnamed statement.
fn encode_extended(
    buf: &mut BytesMut,
    sql: &str,
    types: &[u32],
    params: &[Param],
) -> Result<(), UpstreamError> {
    Parse::new(None, sql.to_owned(), types.to_vec()).encode(buf)?;
    Bind::new(
        None,
        None,
        params
            .iter()
            .map(|(binary, _)| i16::from(*binary))
            .collect(),
        params.iter().map(|(_, v)| v.clone()).collect(),
        Vec::new(),
    )
    .encode(buf)?;
    Execute::new(None, 0).encode(buf)?;
    Sync::new().encode(buf)?;
    Ok(())
}

/// Split a `DataRow` body into text values.
fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let n = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
            continue;
        }
        let v = rest.get(..len as usize)?;
        out.push(Some(String::from_utf8_lossy(v).into_owned()));
        rest = &rest[len as usize..];
    }
    Some(out)
}
