//! Addresses (`VAULT`, `VAULT:/dir`, `VAULT:/path/to/secret`) and the name rules they obey.

use crate::error::{Result, StoreError};

/// The longest name a path component or a vault may have, in bytes (as most Linux file systems).
pub const MAX_NAME_LEN: usize = 255;

/// A validated path inside a vault: zero or more components; zero means the vault's root.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct VaultPath {
    components: Vec<String>,
}

impl VaultPath {
    /// The vault's root directory.
    pub fn root() -> VaultPath {
        VaultPath::default()
    }

    /// Parses an absolute path (`/a/b`); `input` is used in error messages.
    pub fn parse(path: &str, input: &str) -> Result<VaultPath> {
        let bad = |reason| StoreError::InvalidAddress {
            input: input.to_owned(),
            reason,
        };
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| bad("the path must be absolute (start with /)"))?;
        let mut components = Vec::new();
        if rest.is_empty() {
            return Ok(VaultPath { components });
        }
        // A single trailing slash is accepted (`vault:/dir/`) as shells produce it.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        for part in rest.split('/') {
            validate_name(part).map_err(bad)?;
            components.push(part.to_owned());
        }
        Ok(VaultPath { components })
    }

    /// The components, root first.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// Whether this is the vault's root.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The last component, `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// The parent directory, `None` for the root.
    pub fn parent(&self) -> Option<VaultPath> {
        let (_, head) = self.components.split_last()?;
        Some(VaultPath {
            components: head.to_vec(),
        })
    }

    /// This path with one more component (which the caller has validated).
    pub fn join(&self, name: &str) -> VaultPath {
        let mut components = self.components.clone();
        components.push(name.to_owned());
        VaultPath { components }
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &VaultPath) -> bool {
        self.components.starts_with(&other.components)
    }
}

impl std::fmt::Display for VaultPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.components.is_empty() {
            return f.write_str("/");
        }
        for c in &self.components {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// Checks one name (a path component or a vault name): not empty, not `.` or `..`, no `/` or
/// NUL, at most [`MAX_NAME_LEN`] bytes.
pub fn validate_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty path component");
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not allowed");
    }
    if name.contains('\0') {
        return Err("NUL byte in a name");
    }
    if name.contains('/') {
        return Err("`/` inside a name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("a name is longer than 255 bytes");
    }
    Ok(())
}

/// A parsed `VAULT[:/PATH]` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The vault's name.
    pub vault: String,
    /// The path inside it; the root when the address named only the vault.
    pub path: VaultPath,
}

impl Address {
    /// Parses `VAULT`, `VAULT:` or `VAULT:/path`.
    pub fn parse(input: &str) -> Result<Address> {
        let bad = |reason| StoreError::InvalidAddress {
            input: input.to_owned(),
            reason,
        };
        let (vault, path) = match input.split_once(':') {
            Some((v, p)) => (v, p),
            None => (input, ""),
        };
        if vault.is_empty() {
            return Err(bad("missing vault name (expected VAULT:/path)"));
        }
        if vault.contains(':') {
            return Err(bad("`:` inside a vault name"));
        }
        validate_name(vault).map_err(bad)?;
        let path = if path.is_empty() {
            VaultPath::root()
        } else if !path.starts_with('/') {
            return Err(bad("the path must be absolute (VAULT:/path)"));
        } else {
            VaultPath::parse(path, input)?
        };
        Ok(Address {
            vault: vault.to_owned(),
            path,
        })
    }

    /// Parses an address that must name something below the vault's root.
    pub fn parse_entry(input: &str) -> Result<Address> {
        let addr = Address::parse(input)?;
        if addr.path.is_root() {
            return Err(StoreError::InvalidAddress {
                input: input.to_owned(),
                reason: "expected VAULT:/path, not a whole vault",
            });
        }
        Ok(addr)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.vault, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_good_addresses() {
        let a = Address::parse("nix:/nix-tokens").unwrap();
        assert_eq!(a.vault, "nix");
        assert_eq!(a.path.components(), ["nix-tokens"]);
        assert!(Address::parse("nix").unwrap().path.is_root());
        assert!(Address::parse("nix:/").unwrap().path.is_root());
        assert_eq!(Address::parse("a:/b/c/").unwrap().to_string(), "a:/b/c");
    }

    #[test]
    fn refuses_bad_addresses() {
        for bad in [
            "nix:relative",
            "nix:/a/../b",
            "nix:/./b",
            "nix:/a//b",
            "nix:/a\0b",
            ":/x",
            "..:/x",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("v:/{}", "x".repeat(256));
        assert!(Address::parse(&long).is_err());
        let ok = format!("v:/{}", "x".repeat(255));
        assert!(Address::parse(&ok).is_ok());
        assert!(Address::parse_entry("v").is_err());
    }
}
