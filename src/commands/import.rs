//! `import` from other tools: agenix `.age` files, and plaintext YAML, JSON or dotenv documents
//! (what `sops -d` prints). A directory import is `secrets::import`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vaultfs_store::{Address, Credential, SecretBytes, VaultPath, MAX_SECRET_SIZE};

use crate::cli::Cli;
use crate::credentials;
use crate::exit::{usage, UsageError};

/// `import DIR ADDRESS`, `import ADDRESS --age FILE...`, `import ADDRESS --format F < doc`.
pub fn import(
    cli: &Cli,
    first: &str,
    address: Option<&str>,
    age: &[PathBuf],
    age_identity: Option<&Path>,
    format: Option<&str>,
) -> Result<()> {
    if age.is_empty() && format.is_none() {
        let Some(address) = address else {
            usage!("import needs a directory and a VAULT or VAULT:/DIR");
        };
        return crate::commands::secrets::import(cli, Path::new(first), address);
    }
    if let Some(extra) = address {
        usage!("with --age or --format, import takes one VAULT or VAULT:/DIR (got also {extra:?})");
    }
    let base = Address::parse(first)?;
    let (found, what) = match format {
        Some(f) => (from_document(f)?, format!("the {f} document on stdin")),
        None => (
            from_age(cli, age, age_identity)?,
            format!("{} .age file(s)", age.len()),
        ),
    };
    if found.is_empty() {
        usage!("{what}: nothing to import");
    }
    let mut store = credentials::open_store(cli)?;
    let items = found.into_iter().map(|(name, v)| {
        let path = name.split('/').fold(base.path.clone(), |p, c| p.join(c));
        Ok::<(VaultPath, SecretBytes), vaultfs_store::StoreError>((path, v))
    });
    let count = store
        .write_many(&base.vault, items)
        .with_context(|| format!("importing {what} (nothing was written)"))?;
    eprintln!("imported {count} secret(s) into {base}");
    Ok(())
}

fn secret_name(name: &str, origin: &str) -> Result<String> {
    if let Err(reason) = vaultfs_store::validate_name(name) {
        usage!("{origin}: {name:?} cannot be a secret name: {reason}");
    }
    Ok(name.to_owned())
}

fn from_age(
    cli: &Cli,
    files: &[PathBuf],
    identity: Option<&Path>,
) -> Result<Vec<(String, SecretBytes)>> {
    let Some(id_path) = identity.or(cli.identity.as_deref()) else {
        usage!("--age needs a key to decrypt the files: --identity or --age-identity");
    };
    let Credential::Identity(id) = credentials::identity(id_path)? else {
        unreachable!("identity() returns an identity");
    };
    let mut out = Vec::new();
    for file in files {
        let stem = file
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_suffix(".age").unwrap_or(n))
            .ok_or_else(|| anyhow::anyhow!("{}: the name is not UTF-8", file.display()))?;
        let name = secret_name(stem, &file.display().to_string())?;
        let sealed =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let value = id.decrypt_file(&sealed).with_context(|| {
            format!(
                "{}: cannot decrypt with {}",
                file.display(),
                id_path.display()
            )
        })?;
        if value.len() > MAX_SECRET_SIZE {
            usage!("{}: larger than {MAX_SECRET_SIZE} bytes", file.display());
        }
        if out.iter().any(|(n, _): &(String, SecretBytes)| *n == name) {
            usage!(
                "{}: two files would both be the secret {name:?}",
                file.display()
            );
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Reads a flat document from stdin: every key with a scalar value becomes a secret; nested
/// maps become directories (`a: {b: x}` is `a/b`). Lists are refused: they have no names.
fn from_document(format: &str) -> Result<Vec<(String, SecretBytes)>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .take(MAX_SECRET_SIZE as u64 * 16)
        .read_to_string(&mut text)
        .context("reading the document from stdin")?;
    let value: serde_json::Value = match format {
        "json" => serde_json::from_str(&text)
            .map_err(|e| UsageError(format!("stdin: not a JSON document: line {}", e.line())))?,
        "yaml" => serde_yaml::from_str(&text).map_err(|e| {
            UsageError(format!(
                "stdin: not a YAML document{}",
                e.location()
                    .map(|l| format!(": line {}", l.line()))
                    .unwrap_or_default()
            ))
        })?,
        "dotenv" => return dotenv(&text),
        other => usage!("--format {other:?}: expected yaml, json or dotenv"),
    };
    let mut out = Vec::new();
    flatten("", &value, &mut out)?;
    Ok(out)
}

fn flatten(
    prefix: &str,
    v: &serde_json::Value,
    out: &mut Vec<(String, SecretBytes)>,
) -> Result<()> {
    use serde_json::Value;
    let Value::Object(map) = v else {
        usage!("stdin: the document must be a map of names to values");
    };
    for (k, v) in map {
        // sops leaves its own metadata in a decrypted document only with --extract off.
        if prefix.is_empty() && k == "sops" {
            continue;
        }
        let name = secret_name(k, "stdin")?;
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let bytes = match v {
            Value::Object(_) => {
                flatten(&path, v, out)?;
                continue;
            }
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Number(n) => n.to_string().into_bytes(),
            Value::Bool(b) => b.to_string().into_bytes(),
            Value::Null => Vec::new(),
            Value::Array(_) => usage!("stdin: {path}: a list cannot be a secret; give it a name"),
        };
        out.push((path, SecretBytes::new(bytes)));
    }
    Ok(())
}

/// `KEY=value` lines; `export ` prefixes, comments and blank lines are skipped; one pair of
/// matching quotes around a value is removed (`\n` in a double-quoted value is a newline).
fn dotenv(text: &str) -> Result<Vec<(String, SecretBytes)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            usage!("stdin, line {}: expected KEY=value", i + 1);
        };
        let name = secret_name(k.trim(), &format!("stdin, line {}", i + 1))?;
        let v = v.trim();
        let value = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            v[1..v.len() - 1].replace("\\n", "\n").replace("\\\"", "\"")
        } else if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
            v[1..v.len() - 1].to_owned()
        } else {
            v.to_owned()
        };
        out.push((name, SecretBytes::new(value.into_bytes())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_quotes_and_comments() {
        let got = dotenv("# c\nexport A=1\nB=\"x\\ny\"\nC='q r'\n").unwrap();
        let got: Vec<(String, Vec<u8>)> = got
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A".into(), b"1".to_vec()),
                ("B".into(), b"x\ny".to_vec()),
                ("C".into(), b"q r".to_vec())
            ]
        );
    }
}
