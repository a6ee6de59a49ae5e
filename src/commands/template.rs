//! `template set` and `template show`: files rendered from secrets when they are read.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use vaultfs_store::template::TemplateFormat;
use vaultfs_store::Address;

use crate::cli::{Cli, TemplateCommand};
use crate::credentials;

/// A template's text is config, not a secret, but it is kept as private as one; this bounds
/// what a mistaken `--from` of a large file can cost.
const MAX_TEMPLATE_SIZE: u64 = 1024 * 1024;

/// Dispatches `vaultfs template ...`.
pub fn template(cli: &Cli, cmd: &TemplateCommand) -> Result<()> {
    match cmd {
        TemplateCommand::Set {
            address,
            from,
            format,
        } => set(cli, address, from.as_deref(), format),
        TemplateCommand::Show { address } => show(cli, address),
    }
}

fn set(cli: &Cli, address: &str, from: Option<&Path>, format: &str) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    let format: TemplateFormat = match format.parse() {
        Ok(f) => f,
        Err(e) => crate::exit::usage!("{e}"),
    };
    let mut raw = Vec::new();
    let read = match from {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TEMPLATE_SIZE + 1).read_to_end(&mut raw))
            .with_context(|| format!("cannot read {}", path.display())),
        None => std::io::stdin()
            .lock()
            .take(MAX_TEMPLATE_SIZE + 1)
            .read_to_end(&mut raw)
            .context("reading the template from stdin"),
    };
    read?;
    if raw.len() as u64 > MAX_TEMPLATE_SIZE {
        crate::exit::usage!("{addr}: a template is at most {MAX_TEMPLATE_SIZE} bytes");
    }
    let Ok(text) = String::from_utf8(raw) else {
        crate::exit::usage!("{addr}: a template must be UTF-8 text");
    };
    let mut store = credentials::open_store(cli)?;
    store.set_template(&addr, &text, format)?;
    Ok(())
}

fn show(cli: &Cli, address: &str) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    let store = credentials::open_store(cli)?;
    let (text, format) = store.template_source(&addr)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "# format: {}", format_name(format))?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

fn format_name(f: TemplateFormat) -> &'static str {
    match f {
        TemplateFormat::Text => "text",
        TemplateFormat::Ini => "ini",
        TemplateFormat::Json => "json",
    }
}
