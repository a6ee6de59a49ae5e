//! `write`, `cat`, `ls`, `rm`, `mv`, `mkdir`.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use vaultfs_store::{Address, Limits, VaultPath, MAX_SECRET_SIZE};

use crate::cli::{Cli, LimitArgs};
use crate::credentials;
use crate::output;

/// Stores stdin as the secret at `address`. Empty input is refused unless `allow_empty`:
/// `false | vaultfs write` or an early Ctrl-D would otherwise replace a secret with nothing.
pub fn write(cli: &Cli, address: &str, allow_empty: bool, limits: &LimitArgs) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    let limits = limits_of(&addr, limits)?;
    let mut store = credentials::open_store(cli)?;
    // Echo goes off before the prompt shows, so nothing typed after it is echoed.
    let echo_off = crate::tty::EchoOff::stdin();
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("vaultfs: type the secret for {addr} (not echoed), then Ctrl-D (it is stored byte for byte)");
    }
    let value = credentials::read_secret(std::io::stdin().lock(), MAX_SECRET_SIZE as u64)
        .context("reading the secret from stdin")?
        .ok_or_else(|| {
            anyhow::anyhow!("{addr}: the secret on stdin is larger than {MAX_SECRET_SIZE} bytes")
        })?;
    drop(echo_off);
    if value.is_empty() && !allow_empty {
        crate::exit::usage!("{addr}: the input is empty; nothing was written (pass --allow-empty to store an empty secret)");
    }
    let text = output::limits_text(&limits);
    // Recorded in the write's own transaction: no extra commit, and never one without the other.
    store.audit_with_next_write(
        &addr.vault,
        crate::commands::audit::of_this_process(
            &addr,
            "write",
            None,
            if text.is_empty() {
                "write".into()
            } else {
                format!("write ({text})")
            },
        ),
    );
    store.write_limited(&addr, value.expose(), limits)?;
    Ok(())
}

/// The limits the options ask for, checked: a time in the future, a count above zero.
fn limits_of(addr: &Address, args: &LimitArgs) -> Result<Limits> {
    let now = output::now_ns();
    let expires_ns = match (&args.expires, &args.ttl) {
        (Some(t), _) => {
            let Some(at) = crate::when::parse_instant(t) else {
                crate::exit::usage!(
                    "{addr}: --expires {t:?} is not an RFC 3339 time such as 2026-12-31T00:00:00Z"
                );
            };
            if at <= now {
                crate::exit::usage!("{addr}: --expires {t} is in the past; nothing was written");
            }
            Some(at)
        }
        (None, Some(d)) => {
            let Some(ttl) = crate::when::parse_duration(d) else {
                crate::exit::usage!(
                    "{addr}: --ttl {d:?} is not a duration such as 24h, 10m or 1h30m"
                );
            };
            Some(now.saturating_add(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX)))
        }
        (None, None) => None,
    };
    if args.max_opens == Some(0) {
        crate::exit::usage!("{addr}: --max-opens 0 would never be served; give 1 or more");
    }
    Ok(Limits {
        expires_ns,
        max_opens: args.max_opens,
    })
}

fn state_dir() -> Result<std::path::PathBuf> {
    vaultfs_store::default_state_dir().ok_or_else(|| {
        anyhow::anyhow!("no state directory for wrap tokens: set VAULTFS_STATE_DIR or HOME")
    })
}

/// Prints a one-time token for the secret at `address`.
pub fn wrap(cli: &Cli, address: &str, ttl: &str) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    let Some(ttl) = crate::when::parse_duration(ttl) else {
        crate::exit::usage!("{addr}: --ttl {ttl:?} is not a duration such as 10m or 1h");
    };
    let mut store = credentials::open_store(cli)?;
    let (token, wrapped) = store.wrap(&addr, ttl, &state_dir()?)?;
    crate::commands::audit::record(
        &mut store,
        &addr,
        "wrap",
        Some(wrapped.version),
        format!(
            "wrapped until {} UTC",
            output::format_time(wrapped.expires_ns)
        ),
    );
    println!("{token}");
    eprintln!(
        "vaultfs: {addr} (version {}) wrapped until {} UTC; `vaultfs unwrap TOKEN` prints it once",
        wrapped.version,
        output::format_time(wrapped.expires_ns)
    );
    Ok(())
}

/// Prints the secret a wrap token stands for, once.
pub fn unwrap(cli: &Cli, token: &str) -> Result<()> {
    let token = if token == "-" {
        let mut t = String::new();
        std::io::stdin()
            .lock()
            .take(4096)
            .read_to_string(&mut t)
            .context("reading the token from stdin")?;
        t
    } else {
        token.to_owned()
    };
    let mut store = credentials::open_store(cli)?;
    let result = store.unwrap_token(&token, &state_dir()?);
    match &result {
        Ok((w, _)) => crate::commands::audit::record(
            &mut store,
            &w.address,
            "unwrap",
            Some(w.version),
            "token redeemed".into(),
        ),
        Err(
            e @ (vaultfs_store::UnwrapError::Used(a)
            | vaultfs_store::UnwrapError::Expired(a)
            | vaultfs_store::UnwrapError::Changed(a)),
        ) => crate::commands::audit::record_denied(&mut store, a, "unwrap", e.to_string()),
        Err(_) => {}
    }
    match result {
        Ok((_, value)) => {
            let mut out = std::io::stdout().lock();
            out.write_all(value.expose())
                .and_then(|()| out.flush())
                .context("writing to stdout")?;
            Ok(())
        }
        Err(vaultfs_store::UnwrapError::Store(e)) => Err(e.into()),
        Err(e) => anyhow::bail!("{e}"),
    }
}

/// Deletes every expired secret.
pub fn gc(cli: &Cli) -> Result<()> {
    let mut store = credentials::open_store(cli)?;
    let gone = store.gc(output::now_ns())?;
    for addr in &gone {
        println!("removed {addr} (expired)");
        crate::commands::audit::record(&mut store, addr, "expire", None, "gc".into());
    }
    Ok(())
}

/// Copies every file under `dir` into `address` (a vault or a directory of one), in one
/// transaction. Files are found and read one at a time as the store takes them, so memory
/// stays flat whatever their number; any bad file aborts the import with nothing written.
pub fn import(cli: &Cli, dir: &Path, address: &str) -> Result<()> {
    let base = Address::parse(address)?;
    let mut files = collect_files(dir, &base.path)?.peekable();
    if files.peek().is_none() {
        crate::exit::usage!("{}: no files to import", dir.display());
    }
    let mut store = credentials::open_store(cli)?;
    let mut progress = Progress::new();
    let values = files.map(|found| -> Result<(VaultPath, vaultfs_store::SecretBytes)> {
        let (at, path) = found?;
        let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
        let value = credentials::read_secret(file, MAX_SECRET_SIZE as u64)
            .with_context(|| format!("{}", path.display()))?
            .ok_or_else(|| {
                anyhow::anyhow!("{}: larger than {MAX_SECRET_SIZE} bytes", path.display())
            })?;
        progress.tick();
        Ok((at, value))
    });
    let count = store
        .write_many(&base.vault, values)
        .with_context(|| format!("importing {} (nothing was written)", dir.display()));
    progress.done();
    eprintln!("imported {} secret(s) into {base}", count?);
    Ok(())
}

/// A count of imported files on a terminal, redrawn at most ten times a second; nothing when
/// stderr is not a terminal (logs and pipes get only the final line).
struct Progress {
    count: u64,
    last: Option<std::time::Instant>,
}

impl Progress {
    fn new() -> Progress {
        let last =
            std::io::IsTerminal::is_terminal(&std::io::stderr()).then(std::time::Instant::now);
        Progress { count: 0, last }
    }

    fn tick(&mut self) {
        self.count += 1;
        if let Some(last) = &mut self.last {
            if last.elapsed() >= std::time::Duration::from_millis(100) {
                *last = std::time::Instant::now();
                eprint!("\rimporting: {} file(s) read", self.count);
            }
        }
    }

    fn done(&self) {
        if self.last.is_some() {
            // Clear the progress line.
            eprint!("\r\x1b[K");
        }
    }
}

/// The files under `dir`, each with its vault path under `at`, found lazily in name order:
/// only the names of the directories being walked are held, never the whole tree.
fn collect_files(dir: &Path, at: &VaultPath) -> Result<Walk> {
    Ok(Walk {
        stack: vec![(at.clone(), sorted_entries(dir)?)],
    })
}

/// A directory's entries, sorted by name so imports are deterministic.
fn sorted_entries(dir: &Path) -> Result<std::vec::IntoIter<std::fs::DirEntry>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut entries: Vec<_> = entries
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries.into_iter())
}

/// Depth-first walk behind [`collect_files`].
struct Walk {
    stack: Vec<(VaultPath, std::vec::IntoIter<std::fs::DirEntry>)>,
}

impl Walk {
    /// The next file, or the reason the import must stop.
    fn step(&mut self) -> Option<Result<(VaultPath, std::path::PathBuf)>> {
        loop {
            let (at, entries) = self.stack.last_mut()?;
            let Some(entry) = entries.next() else {
                self.stack.pop();
                continue;
            };
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Some(Err(crate::exit::UsageError(format!(
                    "{}: the name is not UTF-8",
                    path.display()
                ))
                .into()));
            };
            if let Err(reason) = vaultfs_store::validate_name(&name) {
                return Some(Err(crate::exit::UsageError(format!(
                    "{}: cannot be a secret name: {reason}",
                    path.display()
                ))
                .into()));
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    return Some(Err(
                        anyhow::Error::from(e).context(format!("{}", path.display()))
                    ))
                }
            };
            let vault_path = at.join(&name);
            if meta.is_dir() {
                match sorted_entries(&path) {
                    Ok(entries) => self.stack.push((vault_path, entries)),
                    Err(e) => return Some(Err(e)),
                }
            } else if meta.is_file() {
                return Some(Ok((vault_path, path)));
            } else {
                return Some(Err(crate::exit::UsageError(format!(
                    "{}: not a regular file or directory",
                    path.display()
                ))
                .into()));
            }
        }
    }
}

impl Iterator for Walk {
    type Item = Result<(VaultPath, std::path::PathBuf)>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.step();
        if matches!(item, Some(Err(_))) {
            // One error ends the walk.
            self.stack.clear();
        }
        item
    }
}

/// Writes the secret at `address` to stdout.
pub fn cat(cli: &Cli, address: &str) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    let store = credentials::open_store(cli)?;
    let value = store.read(&addr)?;
    let mut out = std::io::stdout().lock();
    match out.write_all(value.expose()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A reader that stopped early (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Lists a vault or directory: names, a long table (`-l`), or JSON.
pub fn ls(cli: &Cli, address: &str, long: bool, json: bool, expired: bool) -> Result<()> {
    let addr = Address::parse(address)?;
    let store = credentials::open_store(cli)?;
    let now = output::now_ns();
    let mut listing = store.list(&addr)?;
    if !expired {
        listing.retain(|item| !item.entry.limits.expired_at(now));
    }
    if json {
        let items = listing
            .iter()
            .map(|item| output::listing_json(&addr.vault, item))
            .collect();
        output::print_json(&serde_json::Value::Array(items));
    } else if long {
        let mut table =
            output::Table::new(&["MODE", "OWNER", "GROUP", "SIZE", "MODIFIED (UTC)", "NAME"])
                .right(3);
        listing
            .iter()
            .for_each(|item| table.row(output::long_row(item)));
        table.print();
    } else {
        output::print_lines(listing.iter().map(output::shown_name));
    }
    Ok(())
}

/// Removes an entry.
pub fn rm(cli: &Cli, address: &str, recursive: bool) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    credentials::open_store(cli)?.remove(&addr, recursive)?;
    Ok(())
}

/// Renames an entry.
pub fn mv(cli: &Cli, from: &str, to: &str) -> Result<()> {
    let from = Address::parse_entry(from)?;
    let to = Address::parse_entry(to)?;
    credentials::open_store(cli)?.rename(&from, &to)?;
    Ok(())
}

/// Creates a directory.
pub fn mkdir(cli: &Cli, address: &str, parents: bool) -> Result<()> {
    let addr = Address::parse_entry(address)?;
    credentials::open_store(cli)?.mkdir(&addr, parents)?;
    Ok(())
}
