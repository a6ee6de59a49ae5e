//! Command-line definitions. Every command's help ends with an example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Mount encrypted secret vaults where programs expect plain files.
#[derive(Parser, Debug)]
#[command(
    name = "vaultfs",
    version,
    about,
    after_help = "Examples:\n  vaultfs keygen /etc/vaultfs/key\n  vaultfs init\n  vaultfs vault create nix --owner root --mode 0400\n  printf 'extra-access-tokens = github.com=%s\\n' \"$PAT\" | vaultfs write nix:/nix-tokens\n  vaultfs mount nix:/nix-tokens /run/keys/nix-tokens"
)]
pub struct Cli {
    /// The store file [default: /var/lib/vaultfs/store.db for root, else $XDG_DATA_HOME/vaultfs/store.db]
    #[arg(long, global = true, env = "VAULTFS_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Unlock with this key file (made by `vaultfs keygen`)
    #[arg(long, global = true, env = "VAULTFS_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Unlock with the passphrase in this file (first line); without either option, a passphrase is asked on the terminal
    #[arg(long, global = true, value_name = "PATH")]
    pub passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a new random key file (mode 0600; refuses to overwrite)
    #[command(after_help = "Example:\n  vaultfs keygen /etc/vaultfs/key")]
    Keygen {
        /// Where to write the key
        file: PathBuf,
    },
    /// Create a new store with its first key slot
    #[command(
        after_help = "Examples:\n  vaultfs --key-file /etc/vaultfs/key init\n  vaultfs init            # asks for a passphrase twice"
    )]
    Init {
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Manage key slots (credentials that unlock the store)
    #[command(
        subcommand,
        after_help = "Examples:\n  vaultfs key list\n  vaultfs key add --new-key-file /root/backup.key\n  vaultfs key remove 1"
    )]
    Key(KeyCommand),
    /// Manage vaults
    #[command(
        subcommand,
        after_help = "Examples:\n  vaultfs vault create nix --owner root --mode 0400\n  vaultfs vault list\n  vaultfs vault remove old --force"
    )]
    Vault(VaultCommand),
    /// Store stdin as the secret at VAULT:/PATH (creating parent directories)
    #[command(after_help = "Example:\n  printf '%s' \"$TOKEN\" | vaultfs write nix:/nix-tokens")]
    Write {
        /// VAULT:/PATH
        address: String,
    },
    /// Copy every file under a directory into a vault in one transaction (all or nothing)
    #[command(
        after_help = "Examples:\n  vaultfs import /run/secrets app            # migrate from a sops-nix or agenix ramfs\n  vaultfs import ./keys ssh:/hosts/web"
    )]
    Import {
        /// The directory to read (symlinks to files are followed)
        dir: PathBuf,
        /// VAULT or VAULT:/DIR to import into
        address: String,
    },
    /// Write the secret at VAULT:/PATH to stdout, byte for byte
    #[command(after_help = "Example:\n  vaultfs cat nix:/nix-tokens")]
    Cat {
        /// VAULT:/PATH
        address: String,
    },
    /// List a vault or a directory
    #[command(after_help = "Examples:\n  vaultfs ls nix\n  vaultfs ls -l ssh:/keys")]
    Ls {
        /// Long listing: mode, owner, group, size, modified time
        #[arg(short = 'l', long = "long")]
        long: bool,
        /// VAULT or VAULT:/DIR
        address: String,
    },
    /// Remove a secret or directory
    #[command(
        after_help = "Examples:\n  vaultfs rm nix:/old-token\n  vaultfs rm -r ssh:/old-host"
    )]
    Rm {
        /// Remove directories and everything in them
        #[arg(short = 'r', long)]
        recursive: bool,
        /// VAULT:/PATH
        address: String,
    },
    /// Rename or move an entry inside a vault
    #[command(after_help = "Example:\n  vaultfs mv nix:/token nix:/old/token")]
    Mv {
        /// VAULT:/FROM
        from: String,
        /// VAULT:/TO
        to: String,
    },
    /// Create a directory
    #[command(after_help = "Example:\n  vaultfs mkdir -p ssh:/hosts/web")]
    Mkdir {
        /// Create missing parents; no error if it exists
        #[arg(short = 'p', long)]
        parents: bool,
        /// VAULT:/DIR
        address: String,
    },
    /// Show or change ownership and permissions
    #[command(
        subcommand,
        after_help = "Examples:\n  vaultfs acl show ssh:/id_ed25519\n  vaultfs acl set ssh --owner alice --mode 0400"
    )]
    Acl(AclCommand),
    /// Run a command with secrets in its environment (exec: signals and exit codes pass through)
    #[command(
        after_help = "Examples:\n  vaultfs env aws:/AWS_SECRET_ACCESS_KEY -- aws s3 ls\n  vaultfs env ci:/github-token=GITHUB_TOKEN -- gh pr list\n  vaultfs env app:/env -- ./server     # every secret in the directory\n  vaultfs env --restart-on-change app:/db-password -- ./server"
    )]
    Env {
        /// VAULT:/PATH[=VAR]: the variable defaults to the secret's base name; a directory exports every secret in it
        #[arg(required = true)]
        secrets: Vec<String>,
        /// Stay the command's parent and restart it (SIGTERM, wait, start) with fresh values after each change of the secrets' bytes
        #[arg(long)]
        restart_on_change: bool,
        #[command(flatten)]
        timing: crate::watch::WatchArgs,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a command after each change of secrets (coalesced; never at start; failures retried with backoff)
    #[command(after_help = "Examples:
  vaultfs watch app:/tls -- systemctl reload nginx
  vaultfs watch --quiet-period 5s app:/db-password ci:/token -- /usr/local/bin/redeploy")]
    Watch {
        /// VAULT:/PATH of a secret, or a directory (every secret directly in it)
        #[arg(required = true)]
        addresses: Vec<String>,
        #[command(flatten)]
        timing: crate::watch::WatchArgs,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Mount a vault, a directory, or one secret (the mountpoint is then a regular file)
    #[command(
        after_help = "Examples:\n  vaultfs mount nix /run/keys/nix\n  vaultfs mount nix:/nix-tokens /run/keys/nix-tokens\n  vaultfs mount --foreground ssh:/keys /run/keys/ssh"
    )]
    Mount {
        /// VAULT, VAULT:/DIR or VAULT:/PATH
        source: String,
        /// Where to mount it (created if missing)
        mountpoint: PathBuf,
        /// Stay attached instead of returning once the mount is ready (for systemd: Type=notify)
        #[arg(long)]
        foreground: bool,
        /// Where the background daemon logs (it logs nowhere otherwise); see VAULTFS_LOG
        #[arg(long, value_name = "PATH")]
        log_file: Option<PathBuf>,
        /// How long an open may wait for a locked or stuck store before it fails with EIO
        #[arg(long, value_name = "MS", default_value_t = 2000,
              value_parser = clap::value_parser!(u64).range(1..=600_000))]
        open_timeout_ms: u64,
    },
    /// Unmount a vaultfs mount; its daemon then exits 0
    #[command(after_help = "Example:\n  vaultfs umount /run/keys/nix")]
    Umount {
        /// The mountpoint
        mountpoint: PathBuf,
    },
    /// Serve every mount in a config file from one process (what systemd and NixOS run)
    #[command(
        after_help = "Example config:\n  store = \"/var/lib/vaultfs/store.db\"\n  [[mount]]\n  source = \"nix:/nix-tokens\"\n  mountpoint = \"/run/keys/nix-tokens\"\n\nExamples:\n  vaultfs --key-file /etc/vaultfs/key serve --config /etc/vaultfs/serve.toml\n  vaultfs serve --check --config /etc/vaultfs/serve.toml"
    )]
    Serve {
        /// The TOML config
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Only validate the config (no store, no mount)
        #[arg(long)]
        check: bool,
    },
    /// Quick start: a throwaway store with sample secrets, mounted, listed and read
    #[command(
        after_help = "Example:\n  vaultfs demo            # mounts under a temp dir, shows ls -l and cat, then unmounts\n  vaultfs demo --keep     # leaves it mounted and prints how to explore and unmount"
    )]
    Demo {
        /// Leave the demo mounted
        #[arg(long)]
        keep: bool,
        /// Where to put the demo [default: a new temp dir]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Argon2id cost for a new passphrase slot.
#[derive(Args, Debug, Clone, Copy)]
pub struct KdfArgs {
    /// Argon2id memory in MiB for a passphrase slot
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub kdf_memory: u32,
    /// Argon2id passes for a passphrase slot
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub kdf_iterations: u32,
}

/// `vaultfs key ...`
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List key slots
    #[command(after_help = "Example:\n  vaultfs key list")]
    List,
    /// Add a key slot (a key file, or a passphrase asked twice)
    #[command(
        after_help = "Examples:\n  vaultfs --key-file old.key key add --new-key-file backup.key\n  vaultfs --key-file old.key key add --new-passphrase-file pass.txt\n  vaultfs --key-file old.key key add          # asks for a passphrase"
    )]
    Add {
        /// The new key file
        #[arg(long, value_name = "PATH", conflicts_with = "new_passphrase_file")]
        new_key_file: Option<PathBuf>,
        /// A file holding the new passphrase
        #[arg(long, value_name = "PATH")]
        new_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a key slot (never the last one)
    #[command(after_help = "Example:\n  vaultfs key remove 1")]
    Remove {
        /// The slot id from `key list`
        id: i64,
    },
}

/// `vaultfs vault ...`
#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Create a vault
    #[command(
        after_help = "Example:\n  vaultfs vault create ssh --owner alice --group alice --mode 0400"
    )]
    Create {
        /// Its name
        name: String,
        /// Owner user [default: you]
        #[arg(long)]
        owner: Option<String>,
        /// Group [default: your primary group]
        #[arg(long)]
        group: Option<String>,
        /// Octal mode of secrets; directories get x wherever they get r
        #[arg(long, default_value = "0400")]
        mode: String,
    },
    /// List vaults
    #[command(after_help = "Example:\n  vaultfs vault list")]
    List,
    /// Remove a vault
    #[command(after_help = "Example:\n  vaultfs vault remove old --force")]
    Remove {
        /// Its name
        name: String,
        /// Remove it even when it holds secrets
        #[arg(long)]
        force: bool,
    },
}

/// `vaultfs acl ...`
#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Show the owner, group and mode in force, and where each is inherited from
    #[command(after_help = "Example:\n  vaultfs acl show ssh:/id_ed25519")]
    Show {
        /// VAULT or VAULT:/PATH
        address: String,
    },
    /// Change the vault's defaults (VAULT) or override them on an entry (VAULT:/PATH)
    #[command(
        after_help = "Example:\n  vaultfs acl set ssh:/id_ed25519 --owner alice --mode 0400"
    )]
    Set {
        /// VAULT or VAULT:/PATH
        address: String,
        /// Owner user
        #[arg(long)]
        owner: Option<String>,
        /// Group
        #[arg(long)]
        group: Option<String>,
        /// Octal mode
        #[arg(long)]
        mode: Option<String>,
    },
}
