//! PostgreSQL values as JSON a model can read without losing anything:
//! integers and floats as numbers (non-finite floats and `numeric` as
//! strings, so no precision is lost), timestamps as RFC 3339, `bytea` as
//! base64, JSON as JSON, NULL as `null`, arrays of those as arrays. A type
//! without a decoder here comes back as a note naming it, never as bytes.
//! Parameters go the other way as text, so PostgreSQL parses them for
//! whatever type the statement needs.

use base64::Engine as _;
use bytes::BytesMut;
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

/// One column of a row, as whatever PostgreSQL sent, decoded by type.
pub struct Cell(pub Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Cell, Box<dyn std::error::Error + Sync + Send>> {
        decode(ty, raw).map(Cell)
    }

    fn from_sql_null(_: &Type) -> Result<Cell, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

type DecodeResult = Result<Value, Box<dyn std::error::Error + Sync + Send>>;

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

fn decode(ty: &Type, raw: &[u8]) -> DecodeResult {
    Ok(match *ty {
        Type::BOOL => json!(bool::from_sql(ty, raw)?),
        Type::INT2 => json!(i16::from_sql(ty, raw)?),
        Type::INT4 => json!(i32::from_sql(ty, raw)?),
        Type::INT8 => json!(i64::from_sql(ty, raw)?),
        Type::OID => json!(u32::from_sql(ty, raw)?),
        Type::FLOAT4 => float(f64::from(f32::from_sql(ty, raw)?)),
        Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
        Type::NUMERIC => Value::String(numeric(raw)?),
        Type::BYTEA => Value::String(
            base64::engine::general_purpose::STANDARD.encode(<&[u8]>::from_sql(ty, raw)?),
        ),
        Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
        Type::UUID => Value::String(uuid::Uuid::from_sql(ty, raw)?.to_string()),
        Type::TIMESTAMPTZ => Value::String(
            chrono::DateTime::<chrono::Utc>::from_sql(ty, raw)?
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        Type::TIMESTAMP => Value::String(
            chrono::NaiveDateTime::from_sql(ty, raw)?
                .format("%Y-%m-%dT%H:%M:%S%.f")
                .to_string(),
        ),
        Type::DATE => Value::String(chrono::NaiveDate::from_sql(ty, raw)?.to_string()),
        Type::TIME => Value::String(chrono::NaiveTime::from_sql(ty, raw)?.to_string()),
        _ => other(ty, raw)?,
    })
}

/// Text-like types (by their binary form being the text), arrays, and a
/// named placeholder for the rest.
fn other(ty: &Type, raw: &[u8]) -> DecodeResult {
    if <String as FromSql>::accepts(ty) {
        return Ok(Value::String(String::from_sql(ty, raw)?));
    }
    if let Kind::Array(_) = ty.kind() {
        // One-dimensional arrays; others get the placeholder below.
        if let Ok(items) = Vec::<Option<ArrayCell>>::from_sql(ty, raw) {
            return Ok(Value::Array(
                items
                    .into_iter()
                    .map(|c| c.map(|c| c.0).unwrap_or(Value::Null))
                    .collect(),
            ));
        }
    }
    if let Kind::Enum(_) = ty.kind() {
        return Ok(Value::String(String::from_utf8_lossy(raw).into_owned()));
    }
    Ok(json!({ "unsupported_type": ty.name(), "bytes": raw.len() }))
}

/// An array element (any element type `decode` knows).
struct ArrayCell(Value);

impl<'a> FromSql<'a> for ArrayCell {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        decode(ty, raw).map(ArrayCell)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary `numeric` as its exact decimal text.
fn numeric(raw: &[u8]) -> Result<String, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = word(2)? as i16;
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(word(8 + 2 * i)?);
    }
    // Base-10000 digits: `weight + 1` of them before the point.
    let mut int_part = String::new();
    let mut frac_part = String::new();
    let before = i32::from(weight) + 1;
    if before <= 0 {
        int_part.push('0');
    } else {
        for i in 0..before {
            let d = digits.get(i as usize).copied().unwrap_or(0);
            if int_part.is_empty() {
                int_part.push_str(&d.to_string());
            } else {
                int_part.push_str(&format!("{d:04}"));
            }
        }
    }
    for _ in 0..(-before).max(0) {
        frac_part.push_str("0000");
    }
    for d in digits.iter().skip(before.max(0) as usize) {
        frac_part.push_str(&format!("{d:04}"));
    }
    while frac_part.len() < dscale {
        frac_part.push('0');
    }
    frac_part.truncate(dscale);
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    out.push_str(&int_part);
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac_part);
    }
    Ok(out)
}

/// A row as an array of JSON values, in column order.
pub fn row(r: &Row) -> Vec<Value> {
    (0..r.len())
        .map(|i| match r.try_get::<_, Cell>(i) {
            Ok(c) => c.0,
            Err(e) => json!({ "undecodable": e.to_string() }),
        })
        .collect()
}

/// A parameter sent in text format: PostgreSQL parses it as the type the
/// statement gives it, as it would a literal.
#[derive(Debug)]
pub struct TextParam(pub Option<String>);

impl TextParam {
    pub fn from_json(v: &Value) -> TextParam {
        TextParam(match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            other => Some(other.to_string()),
        })
    }
}

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_keep_every_digit() {
        // 12345.6789
        assert_eq!(
            numeric(&num(3, 1, 0, 4, &[1, 2345, 6789])).unwrap(),
            "12345.6789"
        );
        // -0.0012
        assert_eq!(numeric(&num(1, -1, 0x4000, 4, &[12])).unwrap(), "-0.0012");
        // 10^16 + 0.5
        assert_eq!(
            numeric(&num(6, 4, 0, 2, &[1, 0, 0, 0, 0, 5000])).unwrap(),
            "10000000000000000.50"
        );
        assert_eq!(numeric(&num(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric(&num(0, 0, 0, 2, &[])).unwrap(), "0.00");
        assert_eq!(numeric(&num(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric(&[0, 1]).is_err());
    }
}
