//! Templates: files rendered from secrets, in memory, when they are read.
//!
//! The syntax is placeholders and nothing else, so a template cannot compute, loop or read
//! anything but the secrets it names: `{{ VAULT:/path }}`, optionally followed by filters,
//! `{{ ci:/token | trim }}`, `{{ app:/pw | json }}`; `{{ "{{" }}` writes a literal `{{`.
//!
//! Filters: `trim` drops one trailing newline (`\n` or `\r\n`); `json` escapes the value as
//! the inside of a JSON string; `raw` inserts the bytes as they are. Without `raw`, a value
//! that could inject structure is refused at render time instead of being inserted: any value
//! holding a newline, carriage return or NUL, and, in a template declared `json`, a quote, a
//! backslash or a control character unless the placeholder says `json`. So a secret cannot
//! add a line to a config file or break out of a JSON string.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::error::{Result, StoreError};
use crate::reader::VaultReader;
use crate::records::EntryKind;
use crate::rows::Entry;
use crate::secret::SecretBytes;
use crate::store::Store;

/// What a template renders into; it decides which values need escaping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateFormat {
    /// Line-oriented text (netrc, nix.conf, env files): no value may hold a line break.
    #[default]
    Text,
    /// INI-style config: as text.
    Ini,
    /// JSON: values go inside strings, escaped with `| json`.
    Json,
}

impl std::str::FromStr for TemplateFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(TemplateFormat::Text),
            "ini" => Ok(TemplateFormat::Ini),
            "json" => Ok(TemplateFormat::Json),
            other => Err(format!(
                "unknown template format {other:?} (text, ini or json)"
            )),
        }
    }
}

/// A filter applied to a placeholder's value, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Drop one trailing newline.
    Trim,
    /// Escape as JSON string content.
    Json,
    /// Insert the bytes unchecked.
    Raw,
}

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as it is.
    Text(String),
    /// A secret's value, through its filters.
    Secret {
        /// The secret named.
        address: Address,
        /// Filters, in order.
        filters: Vec<Filter>,
    },
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Its pieces, in order.
    pub pieces: Vec<Piece>,
    /// What it renders into.
    pub format: TemplateFormat,
}

/// Why a template cannot be parsed or rendered. Messages name the placeholder, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A syntax error, with the line it is on.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line of the placeholder.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A value would change the structure of the output.
    #[error("{placeholder}: {reason}")]
    Unsafe {
        /// The placeholder, as written.
        placeholder: String,
        /// What the value holds, and the filter that would allow it.
        reason: &'static str,
    },
    /// A named secret is missing.
    #[error("{0}: no such secret")]
    Missing(String),
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str, format: TemplateFormat) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        while let Some(start) = rest.find("{{") {
            literal.push_str(&rest[..start]);
            let line = text[..text.len() - rest.len() + start]
                .matches('\n')
                .count()
                + 1;
            let syntax = |reason: String| TemplateError::Syntax { line, reason };
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| syntax("`{{` without a closing `}}`".into()))?;
            let inner = after[..end].trim();
            rest = &after[end + 2..];
            if let Some(quoted) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                literal.push_str(quoted);
                continue;
            }
            let mut parts = inner.split('|').map(str::trim);
            let addr_text = parts.next().unwrap_or_default();
            let address =
                Address::parse(addr_text).map_err(|e| syntax(format!("{{{{ {inner} }}}}: {e}")))?;
            if address.path.is_root() {
                return Err(syntax(format!(
                    "{{{{ {inner} }}}}: names a whole vault, not a secret"
                )));
            }
            let filters = parts
                .map(|f| match f {
                    "trim" => Ok(Filter::Trim),
                    "json" => Ok(Filter::Json),
                    "raw" => Ok(Filter::Raw),
                    other => Err(syntax(format!(
                        "{{{{ {inner} }}}}: unknown filter {other:?} (trim, json or raw)"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Secret { address, filters });
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces, format })
    }

    /// The secrets the template names, in order of first use.
    pub fn inputs(&self) -> Vec<&Address> {
        let mut seen: Vec<&Address> = Vec::new();
        for p in &self.pieces {
            if let Piece::Secret { address, .. } = p {
                if !seen.contains(&address) {
                    seen.push(address);
                }
            }
        }
        seen
    }

    /// Renders with `value` giving each input's bytes (`None`: missing). The output is held
    /// in a buffer that is wiped on drop.
    pub fn render(
        &self,
        mut value: impl FnMut(&Address) -> Option<SecretBytes>,
    ) -> Result<SecretBytes, TemplateError> {
        let mut out = SecretBytes::default();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.expose_mut().extend_from_slice(t.as_bytes()),
                Piece::Secret { address, filters } => {
                    let v = value(address)
                        .ok_or_else(|| TemplateError::Missing(address.to_string()))?;
                    self.insert(out.expose_mut(), address, filters, v.expose())?;
                }
            }
        }
        Ok(out)
    }

    fn insert(
        &self,
        out: &mut Vec<u8>,
        address: &Address,
        filters: &[Filter],
        mut bytes: &[u8],
    ) -> Result<(), TemplateError> {
        let unsafe_value = |reason| TemplateError::Unsafe {
            placeholder: format!("{{{{ {address} }}}}"),
            reason,
        };
        let mut raw = false;
        let mut json = false;
        for f in filters {
            match f {
                Filter::Trim => {
                    bytes = bytes
                        .strip_suffix(b"\r\n")
                        .or_else(|| bytes.strip_suffix(b"\n"))
                        .unwrap_or(bytes);
                }
                Filter::Raw => raw = true,
                Filter::Json => json = true,
            }
        }
        if json {
            // Escaped, the value cannot leave its string: any bytes are fine.
            let text = String::from_utf8_lossy(bytes);
            let quoted = serde_json::to_string(&text).unwrap_or_default();
            out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
            return Ok(());
        }
        if !raw {
            if bytes.ends_with(b"\n") && !bytes[..bytes.len() - 1].contains(&b'\n') {
                return Err(unsafe_value(
                    "the value ends with a newline; add `| trim` to drop it",
                ));
            }
            if bytes.iter().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
                return Err(unsafe_value(
                    "the value holds a line break or NUL; add `| raw` to insert it anyway",
                ));
            }
            if self.format == TemplateFormat::Json
                && bytes.iter().any(|b| matches!(b, b'"' | b'\\') || *b < 0x20)
            {
                return Err(unsafe_value(
                    "the value holds a quote, backslash or control character; add `| json`",
                ));
            }
        }
        out.extend_from_slice(bytes);
        Ok(())
    }
}

/// A template's sealed value: its text and format.
#[derive(Serialize, Deserialize)]
struct TemplateRecord {
    format: TemplateFormat,
    text: String,
}

impl Drop for TemplateRecord {
    fn drop(&mut self) {
        // The text names secrets, not values, but it is the admin's private config.
        zeroize::Zeroize::zeroize(&mut self.text);
    }
}

fn encode(text: &str, format: TemplateFormat) -> SecretBytes {
    let record = TemplateRecord {
        format,
        text: text.to_owned(),
    };
    SecretBytes::new(serde_json::to_vec(&record).unwrap_or_default())
}

/// Decodes a template's value; `what` names it in the error.
fn decode(value: &SecretBytes, what: &str) -> Result<Template> {
    let record: TemplateRecord =
        serde_json::from_slice(value.expose()).map_err(|_| StoreError::Tampered {
            what: format!("template {what}"),
        })?;
    Template::parse(&record.text, record.format).map_err(|source| StoreError::Template {
        path: what.to_owned(),
        source,
    })
}

impl Store {
    /// Creates or replaces the template at `addr`. Every placeholder must name an existing
    /// secret of the same vault (a mount holds only its own vault's key, and a template is
    /// rendered by the mount): refused otherwise, naming the placeholder.
    pub fn set_template(
        &mut self,
        addr: &Address,
        text: &str,
        format: TemplateFormat,
    ) -> Result<Entry> {
        let bad = |source| StoreError::Template {
            path: addr.to_string(),
            source,
        };
        let template = Template::parse(text, format).map_err(bad)?;
        for input in template.inputs() {
            if input.vault != addr.vault {
                return Err(bad(TemplateError::Syntax {
                    line: 0,
                    reason: format!(
                        "{input}: a template reads only secrets of its own vault ({})",
                        addr.vault
                    ),
                }));
            }
            match self.stat(input) {
                // An expired input is missing, as it is for opens.
                Ok(Some(l))
                    if l.entry.kind == EntryKind::File
                        && !l.entry.limits.expired_at(crate::records::now_ns()) => {}
                Ok(Some(_)) => {
                    return Err(bad(TemplateError::Syntax {
                        line: 0,
                        reason: format!("{input}: not a secret (a directory or a template)"),
                    }))
                }
                Ok(None) | Err(StoreError::NotFound(_)) => {
                    return Err(bad(TemplateError::Missing(input.to_string())))
                }
                Err(e) => return Err(e),
            }
        }
        let value = encode(text, format);
        self.write_entry(addr, EntryKind::Template, value.expose())
    }

    /// The text and format of the template at `addr`.
    pub fn template_source(&self, addr: &Address) -> Result<(String, TemplateFormat)> {
        let listing = self
            .stat(addr)?
            .ok_or_else(|| StoreError::NotFound(addr.to_string()))?;
        if listing.entry.kind != EntryKind::Template {
            return Err(StoreError::InvalidOperation(format!(
                "{addr} is not a template"
            )));
        }
        let value = self.read_stored(addr)?;
        let record: TemplateRecord =
            serde_json::from_slice(value.expose()).map_err(|_| StoreError::Tampered {
                what: format!("template {addr}"),
            })?;
        Ok((record.text.clone(), record.format))
    }

    /// Renders the template `entry` at `addr` from the current values of its inputs.
    pub(crate) fn render_template(&self, addr: &Address, entry: &Entry) -> Result<SecretBytes> {
        let value = self.read_stored_entry(addr, entry)?;
        let template = decode(&value, &addr.to_string())?;
        let mut failure = None;
        // Inputs are read as stored, and only secrets count: a template moved onto one of
        // its own inputs must not render itself.
        let input_value = |input: &Address| -> Result<Option<SecretBytes>> {
            match self.stat(input) {
                // An expired input is missing, as it is for opens.
                Ok(Some(l))
                    if l.entry.kind == EntryKind::File
                        && !l.entry.limits.expired_at(crate::records::now_ns()) =>
                {
                    self.read_stored_entry(input, &l.entry).map(Some)
                }
                Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let out = template.render(|input| match input_value(input) {
            Ok(v) => v,
            Err(e) => {
                failure.get_or_insert(e);
                None
            }
        });
        match (out, failure) {
            (Ok(v), _) => Ok(v),
            (Err(_), Some(e @ StoreError::Tampered { .. })) => Err(e),
            (Err(source), _) => Err(StoreError::Template {
                path: addr.to_string(),
                source,
            }),
        }
    }
}

impl VaultReader {
    /// The parsed template of entry `id` at `version`; `Ok(None)` when it changed or went.
    pub fn template(&self, id: i64, version: i64, what: &str) -> Result<Option<Template>> {
        match self.read_value(id, version)? {
            Some(value) => decode(&value, what).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, format: TemplateFormat, v: &[u8]) -> Result<Vec<u8>, TemplateError> {
        Template::parse(t, format)?
            .render(|_| Some(SecretBytes::new(v.to_vec())))
            .map(|b| b.expose().to_vec())
    }

    #[test]
    fn placeholders_filters_and_literals() {
        let t = Template::parse(
            "machine github.com password {{ ci:/tok | trim }}\n{{ \"{{\" }} x {{ci:/tok}}",
            TemplateFormat::Text,
        )
        .unwrap();
        assert_eq!(t.inputs().len(), 1);
        let out = t
            .render(|a| (a.to_string() == "ci:/tok").then(|| SecretBytes::new(b"s3\n".to_vec())))
            .unwrap_err();
        assert!(matches!(out, TemplateError::Unsafe { .. }), "{out}");
        assert_eq!(
            render(
                "a={{ v:/x | trim }};{{ \"{{\" }}",
                TemplateFormat::Text,
                b"pw\n"
            )
            .unwrap(),
            b"a=pw;{{"
        );
    }

    #[test]
    fn a_value_cannot_inject_lines_or_break_out_of_json() {
        let err = render("k={{ v:/x }}", TemplateFormat::Ini, b"a\nevil=1").unwrap_err();
        assert!(err.to_string().contains("line break"), "{err}");
        assert!(!err.to_string().contains("evil"), "never the value");
        assert_eq!(
            render("k={{ v:/x | raw }}", TemplateFormat::Ini, b"a\nb").unwrap(),
            b"k=a\nb"
        );
        let err = render(
            r#"{"k": "{{ v:/x }}"}"#,
            TemplateFormat::Json,
            br#"a","admin":"1"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("| json"), "{err}");
        assert_eq!(
            render(
                r#"{"k": "{{ v:/x | json }}"}"#,
                TemplateFormat::Json,
                b"a\"\n"
            )
            .unwrap(),
            br#"{"k": "a\"\n"}"#
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (t, want) in [
            ("ok\n{{ v:/x", "line 2"),
            ("{{ v:relative }}", "absolute"),
            ("{{ v }}", "whole vault"),
            ("{{ v:/x | upper }}", "unknown filter"),
        ] {
            let err = Template::parse(t, TemplateFormat::Text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{t}: {err}");
        }
    }

    #[test]
    fn a_missing_input_is_an_error_not_an_empty_string() {
        let t = Template::parse("x={{ v:/gone }}", TemplateFormat::Text).unwrap();
        assert_eq!(
            t.render(|_| None).unwrap_err(),
            TemplateError::Missing("v:/gone".into())
        );
    }
}
