//! Talking to etcd: connection options (TLS, user/password, bounded timeouts), paginated range
//! reads at one revision, and errors as one line naming the endpoints. The CLI drives these
//! on a current-thread runtime ([`Conn`]); the sync task awaits them on its own.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use etcd_client::{Client, ConnectOptions, GetOptions};

use super::url::EtcdUrl;

/// Keys per range page to start with. The client decodes at most 4 MiB per response and one
/// row line is at most ~1.4 MiB (a 1 MiB value in base64): a page that does not fit is asked
/// again at half the size, down to one key.
const FIRST_PAGE: i64 = 512;

/// How to reach etcd: the flags and config keys besides the address.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// CA certificate (PEM) that signed the members' certificates.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Its key (PEM).
    pub key: Option<PathBuf>,
    /// etcd user.
    pub user: Option<String>,
    /// File holding that user's password (first line).
    pub password_file: Option<PathBuf>,
    /// Connect and per-request timeout.
    pub timeout: Duration,
}

/// The default connect and request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// One key as read.
#[derive(Clone, Debug)]
pub struct Kv {
    /// Its full key.
    pub key: String,
    /// Its value (text: every value vaultfs writes is ASCII).
    pub value: String,
    /// The revision that last changed it.
    pub mod_revision: i64,
}

/// Builds a client; nothing is dialled until the first request (tonic connects lazily), so
/// every later request carries the bound.
pub async fn connect(url: &EtcdUrl, opts: &EtcdOptions) -> Result<Client> {
    let timeout = if opts.timeout.is_zero() {
        DEFAULT_TIMEOUT
    } else {
        opts.timeout
    };
    let mut o = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        .with_keep_alive(Duration::from_secs(5), timeout)
        .with_auto_token_refresh(true)
        .with_require_leader(true);
    if url.tls || opts.cacert.is_some() || opts.cert.is_some() {
        if !url.tls {
            anyhow::bail!("{url}: --etcd-cacert/--etcd-cert need an etcds:// address (TLS)");
        }
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &opts.cacert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("etcd CA certificate {}", ca.display()))?;
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
        }
        match (&opts.cert, &opts.key) {
            (Some(c), Some(k)) => {
                let cert = std::fs::read(c)
                    .with_context(|| format!("etcd client certificate {}", c.display()))?;
                let key = crate::credentials::read_private_file(k, "etcd client key")?;
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key.expose()));
            }
            (None, None) => {}
            _ => anyhow::bail!("{url}: --etcd-cert and --etcd-key go together"),
        }
        o = o.with_tls(tls);
    }
    if let Some(user) = &opts.user {
        let file = opts.password_file.as_ref().ok_or_else(|| {
            anyhow!("{url}: --etcd-user needs --etcd-password-file (a password is never taken on the command line)")
        })?;
        let pass = crate::credentials::read_private_file(file, "etcd password file")?;
        let first = pass
            .expose()
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        let text = std::str::from_utf8(first)
            .map_err(|_| anyhow!("etcd password file {}: not UTF-8", file.display()))?;
        o = o.with_user(user.clone(), text.to_owned());
    }
    // Every member asked a cheap question at once, the first to answer kept: a client
    // balanced over all members sends a request to a dead one as readily as to a live one,
    // so a command would fail whenever the member it drew was down, and asking them in turn
    // would add up their timeouts. A member without a leader (cut off from the others)
    // refuses (require_leader), so the answer comes from the quorum side.
    let mut probes = tokio::task::JoinSet::new();
    for ep in url.endpoints() {
        let (o, head) = (o.clone(), url.head_key());
        probes.spawn(async move {
            let mut c = Client::connect([ep.as_str()], Some(o)).await?;
            c.get(head, Some(GetOptions::new().with_count_only()))
                .await?;
            Ok::<Client, etcd_client::Error>(c)
        });
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = format!("no answer within {} ms", timeout.as_millis());
    loop {
        match tokio::time::timeout_at(deadline, probes.join_next()).await {
            Ok(Some(Ok(Ok(c)))) => return Ok(c),
            Ok(Some(Ok(Err(e)))) => last = short(&e),
            Ok(Some(Err(e))) => last = e.to_string(),
            Ok(None) | Err(_) => break,
        }
    }
    // A member that wants a client certificate ends the handshake without saying why, and
    // the client reports that only as a transport error or a cancelled operation.
    if url.tls && opts.cert.is_none() && (last.contains("canceled") || last.contains("transport")) {
        last.push_str(
            " (if the members require a client certificate, pass --etcd-cert and --etcd-key)",
        );
    }
    Err(unreachable(url, &last))
}

/// "etcd at HOSTS is unreachable: WHY" as one line.
pub fn unreachable(url: &EtcdUrl, why: &str) -> anyhow::Error {
    anyhow!("etcd at {} ({}): {why}", url.hosts_text(), url.prefix)
}

/// An etcd error as a short phrase: the gRPC message rather than the whole status dump.
pub fn short(e: &etcd_client::Error) -> String {
    let text = match e {
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            if m.is_empty() {
                format!("{:?}", s.code())
            } else {
                m.to_owned()
            }
        }
        etcd_client::Error::TransportError(t) => format!("cannot connect ({t})"),
        other => other.to_string(),
    };
    if text.contains("user name is empty") {
        return "etcd requires a user: pass --etcd-user NAME --etcd-password-file FILE".into();
    }
    text.replace('\n', " ")
}

/// Runs one request with the bound, mapping failures to one line.
pub async fn bounded<T>(
    url: &EtcdUrl,
    timeout: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unreachable(url, &short(&e))),
        Err(_) => Err(unreachable(
            url,
            &format!("no answer within {} ms", timeout.as_millis()),
        )),
    }
}

/// Reads every key under `from` (a prefix) at one revision, in pages (etcd's responses are
/// bounded by the client's 4 MiB decode limit), returning the keys and the revision read.
pub async fn range_all(
    client: &mut Client,
    url: &EtcdUrl,
    timeout: Duration,
    from: &str,
) -> Result<(i64, Vec<Kv>)> {
    range_all_at(client, url, timeout, from, 0).await
}

/// [`range_all`] as of `at` (0: now): etcd's history until a compaction removes it.
pub async fn range_all_at(
    client: &mut Client,
    url: &EtcdUrl,
    timeout: Duration,
    from: &str,
    at: i64,
) -> Result<(i64, Vec<Kv>)> {
    let end = prefix_end(from);
    let mut start = from.as_bytes().to_vec();
    let mut revision = at;
    let mut out = Vec::new();
    let mut page = FIRST_PAGE;
    loop {
        let mut o = GetOptions::new().with_range(end.clone()).with_limit(page);
        if revision > 0 {
            o = o.with_revision(revision);
        }
        let resp = match tokio::time::timeout(timeout, client.get(start.clone(), Some(o))).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if page > 1 && short(&e).contains("too large") => {
                page /= 2;
                continue;
            }
            Ok(Err(e)) => return Err(unreachable(url, &short(&e))),
            Err(_) => {
                return Err(unreachable(
                    url,
                    &format!("no answer within {} ms", timeout.as_millis()),
                ))
            }
        };
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        for kv in resp.kvs() {
            out.push(Kv {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: String::from_utf8_lossy(kv.value()).into_owned(),
                mod_revision: kv.mod_revision(),
            });
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    Ok((revision, out))
}

/// The end of the key range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A client on a current-thread runtime, for the CLI (which is not async).
pub struct Conn {
    rt: tokio::runtime::Runtime,
    /// The client.
    pub client: Client,
    /// Where.
    pub url: EtcdUrl,
    /// The request bound.
    pub timeout: Duration,
}

impl Conn {
    /// Connects (lazily; see [`connect`]).
    pub fn open(url: &EtcdUrl, opts: &EtcdOptions) -> Result<Conn> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the etcd client runtime")?;
        let client = rt.block_on(connect(url, opts))?;
        let timeout = if opts.timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            opts.timeout
        };
        Ok(Conn {
            rt,
            client,
            url: url.clone(),
            timeout,
        })
    }

    /// One key, or `None`.
    pub fn get(&mut self, key: &str) -> Result<Option<Kv>> {
        let (url, timeout) = (self.url.clone(), self.timeout);
        let resp = self
            .rt
            .block_on(bounded(&url, timeout, self.client.get(key, None)))?;
        Ok(resp.kvs().first().map(|kv| Kv {
            key: key.to_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
        }))
    }

    /// One transaction.
    pub fn txn(&mut self, txn: etcd_client::Txn) -> Result<etcd_client::TxnResponse> {
        let (url, timeout) = (self.url.clone(), self.timeout);
        self.rt
            .block_on(bounded(&url, timeout, self.client.txn(txn)))
    }

    /// A lease of `ttl` seconds.
    pub fn lease_grant(&mut self, ttl: i64) -> Result<i64> {
        let (url, timeout) = (self.url.clone(), self.timeout);
        let resp = self
            .rt
            .block_on(bounded(&url, timeout, self.client.lease_grant(ttl, None)))?;
        Ok(resp.id())
    }

    /// How many keys are under `from` and the newest revision that wrote one of them, as of
    /// `revision` (0: now). It moves whenever a key there is added, edited, put back or
    /// deleted, so it tells a copy taken at `revision` from a prefix changed behind its back.
    pub fn fingerprint(&mut self, from: &str, revision: i64) -> Result<(i64, i64)> {
        let (url, timeout) = (self.url.clone(), self.timeout);
        let mut o = GetOptions::new()
            .with_range(prefix_end(from))
            .with_sort(
                etcd_client::SortTarget::Mod,
                etcd_client::SortOrder::Descend,
            )
            .with_limit(1)
            .with_keys_only();
        if revision > 0 {
            o = o.with_revision(revision);
        }
        let resp = self
            .rt
            .block_on(bounded(&url, timeout, self.client.get(from, Some(o))))?;
        Ok((
            resp.count(),
            resp.kvs().first().map_or(0, |kv| kv.mod_revision()),
        ))
    }

    /// Every key under `from`.
    pub fn range_all(&mut self, from: &str) -> Result<(i64, Vec<Kv>)> {
        self.range_all_at(from, 0)
    }

    /// Every key under `from` as of revision `at` (0: now).
    pub fn range_all_at(&mut self, from: &str, at: i64) -> Result<(i64, Vec<Kv>)> {
        let (url, timeout) = (self.url.clone(), self.timeout);
        self.rt
            .block_on(range_all_at(&mut self.client, &url, timeout, from, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
