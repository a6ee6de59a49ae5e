//! `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` (`etcds://` for TLS): where a store lives in etcd.
//! Pure parsing, no network, so it builds and is tested without the `etcd` feature.
// Without the feature only the parsing is used (to name the address in the one-line error).
#![cfg_attr(not(feature = "etcd"), allow(dead_code))]

use std::path::Path;

/// A parsed store address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `host:port` of each member, as given.
    pub hosts: Vec<String>,
    /// The key prefix, starting with `/`, without a trailing `/`.
    pub prefix: String,
    /// `etcds://`: talk TLS.
    pub tls: bool,
}

/// Whether `store` is an etcd address rather than a file (so a file literally named
/// `etcd:` stays usable as `./etcd:...`).
pub fn is_etcd(store: &Path) -> bool {
    let s = store.as_os_str().as_encoded_bytes();
    s.starts_with(b"etcd://") || s.starts_with(b"etcds://")
}

impl EtcdUrl {
    /// Parses an address; the error is one line saying what is wrong with it.
    pub fn parse(text: &str) -> Result<EtcdUrl, String> {
        let bad = |why: &str| {
            format!("store address {text:?}: {why} (expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX, e.g. etcd://127.0.0.1:2379/vaultfs/prod)")
        };
        let (tls, rest) = if let Some(r) = text.strip_prefix("etcds://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("etcd://") {
            (false, r)
        } else {
            return Err(bad("not an etcd:// or etcds:// address"));
        };
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(bad("no key prefix after the endpoints")),
        };
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(bad("no key prefix after the endpoints"));
        }
        if prefix.contains("//")
            || prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err(bad("the key prefix has an empty component or a space"));
        }
        let mut list = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = match h.rsplit_once(':') {
                Some(hp) => hp,
                None => return Err(bad(&format!("endpoint {h:?} has no :PORT"))),
            };
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
            if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad(&format!("bad endpoint {h:?}")));
            }
            list.push(h.to_owned());
        }
        Ok(EtcdUrl {
            hosts: list,
            prefix: prefix.to_owned(),
            tls,
        })
    }

    /// The endpoint URLs the client dials.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.hosts
            .iter()
            .map(|h| format!("{scheme}://{h}"))
            .collect()
    }

    /// The endpoints as one would type them, for messages.
    pub fn hosts_text(&self) -> String {
        self.hosts.join(",")
    }

    /// Every key of the store is under `PREFIX/` (the slash keeps `/a/prod` from matching
    /// `/a/production`).
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The head record.
    pub fn head_key(&self) -> String {
        format!("{}/head", self.prefix)
    }

    /// Where one row line lives (`ROW` as `vaultfs_store::mirror::row_key` names it).
    pub fn row_key(&self, row: &str) -> String {
        format!("{}/r/{row}", self.prefix)
    }

    /// The row name back from a full key under `PREFIX/r/`.
    pub fn row_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)?.strip_prefix("/r/")
    }

    /// Set while a batched write is between its first and its last transaction.
    pub fn pending_key(&self) -> String {
        format!("{}/pending", self.prefix)
    }

    /// Where host `host` records the revision it applied.
    pub fn ack_key(&self, host: &str) -> String {
        format!("{}/acks/{host}", self.prefix)
    }

    /// The acks' common prefix.
    pub fn acks_root(&self) -> String {
        format!("{}/acks/", self.prefix)
    }
}

impl std::fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        write!(f, "{scheme}://{}{}", self.hosts_text(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_and_prefix() {
        let u = EtcdUrl::parse("etcd://h1:2379,10.0.0.2:2380/vaultfs/prod/").unwrap();
        assert_eq!(u.hosts, ["h1:2379", "10.0.0.2:2380"]);
        assert_eq!(u.prefix, "/vaultfs/prod");
        assert_eq!(u.endpoints(), ["http://h1:2379", "http://10.0.0.2:2380"]);
        assert_eq!(u.head_key(), "/vaultfs/prod/head");
        assert_eq!(u.row_of("/vaultfs/prod/r/entry/1/2"), Some("entry/1/2"));
        assert_eq!(u.row_of("/vaultfs/production/r/x"), None);
        assert_eq!(u.to_string(), "etcd://h1:2379,10.0.0.2:2380/vaultfs/prod");
        let t = EtcdUrl::parse("etcds://[::1]:2379/p").unwrap();
        assert!(t.tls);
        assert_eq!(t.endpoints(), ["https://[::1]:2379"]);
    }

    #[test]
    fn refuses_bad_addresses_with_one_line() {
        for bad in [
            "etcd://",
            "etcd://h:2379",
            "etcd://h:2379/",
            "etcd://h/p",
            "etcd://h:0/p",
            "etcd://h:99999/p",
            "etcd://:2379/p",
            "etcd://h:2379,/p",
            "etcd://h:2379/a//b",
            "etcd://h:2379/a b",
            "http://h:2379/p",
        ] {
            let e = EtcdUrl::parse(bad).unwrap_err();
            assert!(
                !e.contains('\n') && e.contains("store address"),
                "{bad}: {e}"
            );
        }
        assert!(is_etcd(Path::new("etcd://h:1/p")));
        assert!(!is_etcd(Path::new("./etcd://h:1/p")));
    }
}
