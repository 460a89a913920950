//! Export formats: JSON lines (one record object a line) and CSV (header
//! `seq,prev,payload,hash,sig`), produced record by record so an export of
//! any size streams; and reading them back for `veilctl audit verify --file`.

use std::io::BufRead;

use super::chain::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Jsonl,
    Csv,
}

/// Which records to export. Times are Unix milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub identity: Option<String>,
}

impl Filter {
    /// Whether `r` belongs in the export; `time` is its payload's time
    /// ([`super::event::time_of`], read once by the caller). Records whose
    /// payload cannot be read are kept: verification will say why.
    pub fn matches(&self, r: &Record, time: Option<u64>) -> bool {
        if let (Some(since), Some(t)) = (self.since, time)
            && t < since
        {
            return false;
        }
        if let (Some(until), Some(t)) = (self.until, time)
            && t >= until
        {
            return false;
        }
        match &self.identity {
            Some(id) => match serde_json::from_str::<serde_json::Value>(&r.payload) {
                Ok(p) => super::Event::identity_of(&p) == Some(id.as_str()),
                Err(_) => true,
            },
            None => true,
        }
    }
}

/// A `--since` / `--until` bound in Unix milliseconds: an RFC 3339 time
/// (`2026-11-25T09:00:00Z`), a date (`2026-11-25`, midnight UTC), a
/// duration meaning that long before `now_ms` (`90s`, `15m`, `1h`, `7d`), or
/// Unix milliseconds.
pub fn parse_bound(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    if let Some(t) = super::event::parse_time(s) {
        return Ok(t);
    }
    if let Some(t) = super::event::parse_time(&format!("{s}T00:00:00Z")) {
        return Ok(t);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    Err(format!(
        "cannot read {s:?} as a time: use RFC 3339 (2026-11-25T09:00:00Z), a date (2026-11-25), \
         a duration ago (90s, 15m, 1h, 7d) or Unix milliseconds"
    ))
}

pub const CSV_HEADER: &str = "seq,prev,payload,hash,sig\n";

/// One record in the format, with its line ending.
pub fn line(r: &Record, format: Format) -> String {
    match format {
        Format::Jsonl => {
            let mut s = serde_json::to_string(r).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Csv => format!(
            "{},{},{},{},{}\n",
            r.seq,
            r.prev,
            csv_field(&r.payload),
            r.hash,
            r.sig.as_deref().unwrap_or("")
        ),
    }
}

/// RFC 4180: quoted, with quotes doubled.
fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Read an export back, record by record. The format is recognised by the
/// first line (CSV starts with its header).
pub fn read(input: impl BufRead) -> impl Iterator<Item = Result<Record, String>> {
    let mut lines = input.lines().enumerate().peekable();
    let csv = matches!(lines.peek(), Some((_, Ok(l))) if l.trim() == CSV_HEADER.trim());
    if csv {
        lines.next();
    }
    lines.filter_map(move |(n, line)| {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(format!("line {}: {e}", n + 1))),
        };
        if line.trim().is_empty() {
            return None;
        }
        let parsed = if csv {
            parse_csv(&line)
        } else {
            serde_json::from_str(&line).map_err(|e| e.to_string())
        };
        Some(parsed.map_err(|e| format!("line {}: {e}", n + 1)))
    })
}

fn parse_csv(line: &str) -> Result<Record, String> {
    // seq,prev,"payload",hash,sig — only the payload is quoted, and it
    // cannot hold a raw newline (JSON escapes them).
    let mut it = line.splitn(3, ',');
    let seq = it.next().ok_or("no seq")?.parse().map_err(|_| "bad seq")?;
    let prev = it.next().ok_or("no prev")?.to_owned();
    let rest = it.next().ok_or("no payload")?;
    let rest = rest.strip_prefix('"').ok_or("payload not quoted")?;
    let mut payload = String::new();
    let mut chars = rest.char_indices().peekable();
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if matches!(chars.peek(), Some((_, '"'))) {
                payload.push('"');
                chars.next();
            } else {
                end = Some(i + 1);
                break;
            }
        } else {
            payload.push(c);
        }
    }
    let tail = &rest[end.ok_or("unterminated payload")?..];
    let mut tail = tail.strip_prefix(',').ok_or("no hash")?.split(',');
    let hash = tail.next().ok_or("no hash")?.to_owned();
    // Empty on records a later signature vouches for.
    let sig = Some(tail.next().ok_or("no sig column")?)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Ok(Record {
        seq,
        prev,
        payload,
        hash,
        sig,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_times_dates_durations_and_millis() {
        let now = 1_764_064_800_000; // 2025-11-25T10:00:00Z
        assert_eq!(parse_bound("2025-11-25T10:00:00Z", 0), Ok(now));
        assert_eq!(parse_bound("2025-11-25", 0), Ok(now - 10 * 3_600_000));
        assert_eq!(parse_bound("1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_bound("1764064800000", 0), Ok(now));
        assert!(parse_bound("yesterday-ish", now).is_err());
    }

    #[test]
    fn csv_and_jsonl_round_trip() {
        let r = Record {
            seq: 3,
            prev: "00".repeat(32),
            payload: r#"{"seq":3,"text":"a \"quoted\", comma"}"#.into(),
            hash: "ab".repeat(32),
            sig: Some("cd".repeat(64)),
        };
        let unsigned = Record {
            sig: None,
            ..r.clone()
        };
        assert!(!line(&unsigned, Format::Jsonl).contains("sig"));
        assert_eq!(
            parse_csv(line(&unsigned, Format::Csv).trim_end()).unwrap(),
            unsigned
        );
        for f in [Format::Jsonl, Format::Csv] {
            let mut text = String::new();
            if f == Format::Csv {
                text.push_str(CSV_HEADER);
            }
            text.push_str(&line(&r, f));
            let back: Vec<_> = read(text.as_bytes()).collect();
            assert_eq!(back, vec![Ok(r.clone())], "{f:?}");
        }
    }
}
