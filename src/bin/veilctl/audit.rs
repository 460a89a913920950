//! `veilctl audit public-key|checkpoint|export|verify`: online through the
//! admin API, offline on a stopped daemon's data directory, or on an export
//! file with a public key kept elsewhere.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use infraveil::audit::chain::{self, ChainVerifier, Problem, Summary};
use infraveil::audit::{export, key};
use infraveil::store::Store;

use crate::api::Api;

/// Where `verify` and `public-key` look.
pub struct Offline {
    pub data_dir: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Offline {
    fn key_path(&self) -> Option<PathBuf> {
        self.key_file.clone().or_else(|| {
            self.data_dir
                .as_ref()
                .map(|d| d.join(infraveil::daemon::AUDIT_KEY_FILE))
        })
    }
}

pub fn public_key(api: Option<&Api>, offline: &Offline, json_out: bool) -> anyhow::Result<()> {
    let hex = match offline.key_path() {
        Some(path) => key::public_hex(&key::load_or_create(&path, false)?),
        None => {
            let v: serde_json::Value = need(api)?.get("/v1/audit/public-key")?;
            v["public_key"]
                .as_str()
                .context("the admin API sent no public_key")?
                .to_owned()
        }
    };
    if json_out {
        println!("{}", serde_json::json!({ "public_key": hex }));
    } else {
        println!("{hex}");
    }
    Ok(())
}

pub fn checkpoint(api: &Api, json_out: bool) -> anyhow::Result<()> {
    let v: serde_json::Value = api.get("/v1/audit/checkpoint")?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match (v["head"]["seq"].as_u64(), v["head"]["hash"].as_str()) {
        (Some(seq), Some(hash)) => println!("head        {seq}:{hash}"),
        _ => println!("head        (the log is empty)"),
    }
    match (
        v["checkpoint"]["head_seq"].as_u64(),
        v["checkpoint"]["head_hash"].as_str(),
    ) {
        (Some(seq), Some(hash)) => println!(
            "checkpoint  {seq}:{hash} (signed in record {})",
            v["checkpoint"]["seq"]
        ),
        _ => println!("checkpoint  (none since the daemon started)"),
    }
    println!(
        "Keep either line elsewhere; `veilctl audit verify --expect-head SEQ:HASH` then detects a cut tail."
    );
    Ok(())
}

pub struct ExportArgs {
    pub since: Option<String>,
    pub until: Option<String>,
    pub identity: Option<String>,
    pub format: String,
}

/// Stream the export to stdout as it arrives.
pub fn export(api: &Api, args: ExportArgs) -> anyhow::Result<()> {
    let mut query = vec![("format", args.format)];
    for (name, v) in [
        ("since", args.since),
        ("until", args.until),
        ("identity", args.identity),
    ] {
        if let Some(v) = v {
            query.push((name, v));
        }
    }
    let mut resp = api.get_stream("/v1/audit/export", &query)?;
    let mut out = std::io::stdout().lock();
    match std::io::copy(&mut resp, &mut out).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // `veilctl audit export | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => bail!("the export was cut off: {e}"),
    }
}

pub struct VerifyArgs {
    pub file: Option<PathBuf>,
    pub public_key: Option<String>,
    pub expect_head: Option<String>,
    pub allow_gaps: bool,
}

/// Verify and print the verdict; returns the exit code (0 good, 1 bad).
pub fn verify(
    api: Option<&Api>,
    offline: &Offline,
    args: VerifyArgs,
    json_out: bool,
) -> anyhow::Result<i32> {
    let expect = match args.expect_head.as_deref() {
        Some(h) => Some(
            chain::parse_head(h)
                .context("--expect-head must be SEQ:HASH (a record number and its 64-hex hash)")?,
        ),
        None => None,
    };
    let pinned = match args.public_key.as_deref() {
        Some(k) => Some(read_public_key(k)?),
        None => None,
    };
    let verdict = if let Some(file) = &args.file {
        let Some(public) = pinned else {
            bail!(
                "--file needs --public-key (the key printed by `veilctl audit public-key`, kept elsewhere)"
            );
        };
        infraveil::audit::verdict(
            &verify_file(file, &public, expect, args.allow_gaps)?,
            &public,
        )
    } else if let Some(dir) = &offline.data_dir {
        let (public, warning) = match pinned {
            Some(k) => (k, None),
            None => {
                let path = offline.key_path().context("no key file")?;
                let k = key::public_hex(&key::load_or_create(&path, false)?);
                (
                    k,
                    Some(
                        "verified against the key in the data directory, which whoever can edit the log can also use; pass --public-key with the key you recorded to rule out re-signing",
                    ),
                )
            }
        };
        let v = infraveil::audit::verdict(&verify_dir(dir, &public, expect)?, &public);
        if let Some(w) = warning
            && !json_out
        {
            eprintln!("note: {w}");
        }
        v
    } else {
        let api = need(api)?;
        let mut path = "/v1/audit/verify".to_owned();
        if let Some((seq, hash)) = &expect {
            path.push_str(&format!("?expect_head={seq}:{hash}"));
        }
        let v: serde_json::Value = api.get_long(&path)?;
        if let Some(k) = &pinned
            && v["public_key"].as_str() != Some(k.as_str())
        {
            bail!(
                "the daemon signs with {} but --public-key is {k}: the key was replaced",
                v["public_key"].as_str().unwrap_or("?")
            );
        }
        v
    };
    print_verdict(&verdict, json_out)?;
    Ok(if verdict["ok"] == true { 0 } else { 1 })
}

/// A public key given as 64 hex characters or as a file holding them.
fn read_public_key(k: &str) -> anyhow::Result<String> {
    let text = if key::parse_public(k.trim()).is_some() {
        k.trim().to_owned()
    } else {
        std::fs::read_to_string(k)
            .with_context(|| {
                format!("--public-key {k:?} is neither 64 hex characters nor a readable file")
            })?
            .trim()
            .to_owned()
    };
    key::parse_public(&text).context("the public key must be 64 hex characters (32 bytes)")?;
    Ok(text.to_ascii_lowercase())
}

fn verify_dir(
    dir: &Path,
    public: &str,
    expect: Option<(u64, String)>,
) -> anyhow::Result<Result<Summary, Problem>> {
    let store = Store::open(dir).with_context(|| {
        format!(
            "cannot open {} (offline verification needs the daemon stopped)",
            dir.display()
        )
    })?;
    let verifying = key::parse_public(public).context("bad public key")?;
    let result = infraveil::audit::verify_store(&store, verifying, expect);
    match result {
        Ok(s) => Ok(Ok(s)),
        Err(infraveil::audit::VerifyError::Bad(p)) => Ok(Err(p)),
        Err(infraveil::audit::VerifyError::Store(e)) => Err(e.into()),
    }
}

/// `veilctl audit set-aside`: the unsigned tail goes to its own tree.
pub fn set_aside(dir: &Path, json_out: bool) -> anyhow::Result<()> {
    let store = Store::open(dir).with_context(|| {
        format!(
            "cannot open {} (setting records aside needs the daemon stopped)",
            dir.display()
        )
    })?;
    let moved = infraveil::audit::log::AuditLog::open(&store)?.set_aside_unsigned_tail(&store)?;
    if json_out {
        let v = match moved {
            Some((first, last)) => serde_json::json!({"moved": true, "first": first, "last": last}),
            None => serde_json::json!({"moved": false}),
        };
        println!("{v}");
    } else {
        match moved {
            Some((first, last)) => println!(
                "Moved records {first} to {last} (after the last signature) to the audit-set-aside tree; the log now ends at a signed record."
            ),
            None => println!("Nothing to set aside: the log ends at a signed record."),
        }
    }
    Ok(())
}

fn verify_file(
    file: &Path,
    public: &str,
    expect: Option<(u64, String)>,
    allow_gaps: bool,
) -> anyhow::Result<Result<Summary, Problem>> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let verifying = key::parse_public(public).context("bad public key")?;
    let mut verifier: Option<ChainVerifier> = None;
    let mut last_seq = 0;
    for r in export::read(BufReader::new(f)) {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                return Ok(Err(Problem {
                    seq: last_seq + 1,
                    fault: chain::Fault::Malformed,
                    detail: e,
                }));
            }
        };
        last_seq = r.seq;
        let v = verifier.get_or_insert_with(|| {
            // An export from the start links to the genesis; one from
            // `--since` starts wherever it starts.
            let v = if r.seq == 1 {
                ChainVerifier::from_genesis(verifying)
            } else {
                ChainVerifier::from_anywhere(verifying, allow_gaps)
            };
            match &expect {
                Some((seq, hash)) => v.expect_head(*seq, hash),
                None => v,
            }
        });
        if let Err(p) = v.check(&r) {
            return Ok(Err(p));
        }
    }
    let Some(v) = verifier else {
        bail!("{} holds no records", file.display());
    };
    Ok(v.finish())
}

fn print_verdict(v: &serde_json::Value, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    if v["ok"] == true {
        match (v["head_seq"].as_u64(), v["head_hash"].as_str()) {
            (Some(seq), Some(hash)) => {
                println!(
                    "ok: {} records verified ({} signatures); head {seq}:{hash}",
                    v["records"], v["signatures"]
                );
                if v["unvouched"].as_u64().unwrap_or(0) > 0 {
                    println!(
                        "note: {} records of this filtered export are vouched for by signatures on records it leaves out; verify the whole log to vouch for them",
                        v["unvouched"]
                    );
                }
            }
            _ => println!("ok: the log is empty"),
        }
    } else {
        let p = &v["problem"];
        println!(
            "FAILED at record {}: {} ({})",
            p["seq"],
            p["fault"].as_str().unwrap_or("?"),
            p["detail"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn need(api: Option<&Api>) -> anyhow::Result<&Api> {
    api.context(
        "no admin API address: set --admin-url or VEIL_ADMIN_URL (or work offline with --data-dir)",
    )
}
