//! Command-line definitions. Every command's help ends with an example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Mount encrypted secret vaults where programs expect plain files.
#[derive(Parser, Debug)]
#[command(
    name = "vaultfs",
    version,
    about,
    after_help = "Examples:\n  vaultfs keygen /etc/vaultfs/key\n  vaultfs init\n  vaultfs vault create nix --owner root --mode 0400\n  printf 'extra-access-tokens = github.com=%s\\n' \"$PAT\" | vaultfs write nix:/nix-tokens\n  vaultfs mount nix:/nix-tokens /run/keys/nix-tokens\n\nEnvironment:\n  VAULTFS_STORE, VAULTFS_KEY_FILE   the store and its key file (as --store, --key-file)\n  VAULTFS_LOG                       the log filter [default: warn,fuser=error,vaultfs::ready=info],\n                                    e.g. VAULTFS_LOG=info or VAULTFS_LOG=debug\n  VAULTFS_STATE_DIR                 where the highest store head seen is remembered"
)]
pub struct Cli {
    /// The store file [default: /var/lib/vaultfs/store.db for root, else $XDG_DATA_HOME/vaultfs/store.db]
    #[arg(long, env = "VAULTFS_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Unlock with this key file (made by `vaultfs keygen`)
    #[arg(long, env = "VAULTFS_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Unlock with the passphrase in this file (first line); without either option, a passphrase is asked on the terminal
    #[arg(long, value_name = "PATH")]
    pub passphrase_file: Option<PathBuf>,
    /// Accept a store older than one this host has seen (after restoring a backup on purpose)
    #[arg(long)]
    pub allow_rollback: bool,
    /// Unlock with a host key: an age identity file or an OpenSSH ed25519 private key (e.g. /etc/ssh/ssh_host_ed25519_key)
    #[arg(long, env = "VAULTFS_IDENTITY", value_name = "PATH")]
    pub identity: Option<PathBuf>,
    /// How to reach a store in etcd (filled from the command's options).
    #[arg(skip)]
    pub etcd: EtcdArgs,
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
        store: StoreArgs,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Upgrade a store made by an older vaultfs to this version's format (one transaction)
    #[command(after_help = "Example:\n  vaultfs --key-file /etc/vaultfs/key migrate")]
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage key slots (credentials that unlock the store)
    #[command(
        after_help = "Examples:\n  vaultfs key list\n  vaultfs key add --new-key-file /root/backup.key\n  vaultfs key remove 1"
    )]
    Key {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        cmd: KeyCommand,
    },
    /// Manage vaults
    #[command(
        after_help = "Examples:\n  vaultfs vault create nix --owner root --mode 0400\n  vaultfs vault list\n  vaultfs vault remove old --force"
    )]
    Vault {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        cmd: VaultCommand,
    },
    /// Store stdin as the secret at VAULT:/PATH (creating parent directories)
    #[command(after_help = "Example:\n  printf '%s' \"$TOKEN\" | vaultfs write nix:/nix-tokens")]
    Write {
        #[command(flatten)]
        store: StoreArgs,
        /// VAULT:/PATH
        address: String,
        /// Store an empty value (empty input is refused otherwise: it is usually a failed pipe)
        #[arg(long)]
        allow_empty: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Print a one-time token that `vaultfs unwrap` redeems once for this version of a secret
    #[command(after_help = "Example:\n  vaultfs wrap ci:/deploy-key --ttl 10m")]
    Wrap {
        #[command(flatten)]
        store: StoreArgs,
        /// VAULT:/PATH of a secret
        address: String,
        /// How long the token works (10m, 1h, 1d)
        #[arg(long, default_value = "10m")]
        ttl: String,
    },
    /// Print the secret a wrap token stands for, once (a second unwrap fails)
    #[command(
        after_help = "Examples:\n  vaultfs unwrap vaultfs-wrap-3f...\n  vaultfs unwrap - < token-file"
    )]
    Unwrap {
        #[command(flatten)]
        store: StoreArgs,
        /// The token, or - to read it from stdin
        token: String,
    },
    /// Who opened, wrote, granted or unwrapped what, and what was decided (never a value)
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  vaultfs audit --path web:/tls --since 1d\n  vaultfs audit --denied --json\n  vaultfs audit --verify\n  vaultfs audit prune --before 2026-01-01T00:00:00Z"
    )]
    Audit {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        args: AuditArgs,
    },
    /// Delete every expired secret of every vault (mounts hide them already)
    #[command(after_help = "Example:\n  vaultfs gc")]
    Gc {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Copy every file under a directory into a vault in one transaction (all or nothing); or agenix .age files (--age), or each key of a YAML, JSON or dotenv document on stdin (--format)
    #[command(
        after_help = "Examples:\n  vaultfs import /run/secrets app            # migrate from a sops-nix or agenix ramfs\n  vaultfs import ./keys ssh:/hosts/web\n  vaultfs import app --age secrets/*.age --identity ~/.ssh/id_ed25519\n  sops -d secrets.yaml | vaultfs import --format yaml app:/web"
    )]
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// The directory to read (symlinks to files are followed); with --age or --format, the VAULT or VAULT:/DIR to import into
        dir: String,
        /// VAULT or VAULT:/DIR to import into
        address: Option<String>,
        /// agenix files to decrypt (each becomes a secret named after the file, less `.age`)
        #[arg(long, value_name = "FILE.age", num_args = 1.., conflicts_with = "format")]
        age: Vec<PathBuf>,
        /// The key that decrypts the --age files [default: --identity; the store is then unlocked by --key-file or --passphrase-file when given]
        #[arg(long, value_name = "PATH")]
        age_identity: Option<PathBuf>,
        /// Read a plaintext document from stdin and import each key: yaml, json or dotenv
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
    },
    /// Write the secret at VAULT:/PATH to stdout, byte for byte
    #[command(after_help = "Example:\n  vaultfs cat nix:/nix-tokens")]
    Cat {
        #[command(flatten)]
        store: StoreArgs,
        /// VAULT:/PATH
        address: String,
    },
    /// List a vault or a directory
    #[command(after_help = "Examples:\n  vaultfs ls nix\n  vaultfs ls -l ssh:/keys")]
    Ls {
        #[command(flatten)]
        store: StoreArgs,
        /// Long listing: mode, owner, group, size, modified time
        #[arg(short = 'l', long = "long")]
        long: bool,
        /// JSON for scripts: one object per entry, with everything -l shows
        #[arg(long, conflicts_with = "long")]
        json: bool,
        /// Also list expired secrets (hidden otherwise, and from mounts)
        #[arg(long)]
        expired: bool,
        /// VAULT or VAULT:/DIR
        address: String,
    },
    /// Remove a secret or directory
    #[command(
        after_help = "Examples:\n  vaultfs rm nix:/old-token\n  vaultfs rm -r ssh:/old-host"
    )]
    Rm {
        #[command(flatten)]
        store: StoreArgs,
        /// Remove directories and everything in them
        #[arg(short = 'r', long)]
        recursive: bool,
        /// VAULT:/PATH
        address: String,
    },
    /// Rename or move an entry inside a vault
    #[command(after_help = "Example:\n  vaultfs mv nix:/token nix:/old/token")]
    Mv {
        #[command(flatten)]
        store: StoreArgs,
        /// VAULT:/FROM
        from: String,
        /// VAULT:/TO
        to: String,
    },
    /// Create a directory
    #[command(after_help = "Example:\n  vaultfs mkdir -p ssh:/hosts/web")]
    Mkdir {
        #[command(flatten)]
        store: StoreArgs,
        /// Create missing parents; no error if it exists
        #[arg(short = 'p', long)]
        parents: bool,
        /// VAULT:/DIR
        address: String,
    },
    /// Show or change ownership and permissions
    #[command(
        after_help = "Examples:\n  vaultfs acl show ssh:/id_ed25519\n  vaultfs acl set ssh --owner alice --mode 0400"
    )]
    Acl {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        cmd: AclCommand,
    },
    /// Files rendered from secrets when they are read (netrc, nix.conf, JSON configs)
    #[command(
        after_help = "Examples:\n  echo 'machine github.com login x password {{ ci:/gh | trim }}' | vaultfs template set ci:/netrc\n  vaultfs template set app:/config.json --format json --from config.json.tmpl\n  vaultfs template show ci:/netrc"
    )]
    Template {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        cmd: TemplateCommand,
    },
    /// Run a command with secrets in its environment (exec: signals and exit codes pass through); one trailing newline of each value is dropped unless --raw
    #[command(
        after_help = "Examples:\n  vaultfs env aws:/AWS_SECRET_ACCESS_KEY -- aws s3 ls\n  vaultfs env ci:/github-token=GITHUB_TOKEN -- gh pr list\n  vaultfs env app:/env -- ./server     # every secret in the directory\n  vaultfs env --restart-on-change app:/db-password -- ./server"
    )]
    Env {
        #[command(flatten)]
        store: StoreArgs,
        /// VAULT:/PATH[=VAR]: the variable defaults to the secret's base name; a directory exports every secret directly in it (and says which subdirectories it skipped)
        #[arg(required = true)]
        secrets: Vec<String>,
        /// Keep each value byte for byte; by default one trailing newline is dropped, as `$(...)` does
        #[arg(long)]
        raw: bool,
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
        #[command(flatten)]
        store: StoreArgs,
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
        #[command(flatten)]
        store: StoreArgs,
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
        /// Let the kernel check access and skip opens: unchanged secrets are read from the
        /// page cache. Refused for vaults with templates, grants or read limits; opens are
        /// not audited
        #[arg(long)]
        kernel_checks: bool,
    },
    /// Unmount a vaultfs mount; its daemon then exits 0
    #[command(after_help = "Example:\n  vaultfs umount /run/keys/nix")]
    Umount {
        /// The mountpoint
        mountpoint: PathBuf,
    },
    /// Serve every mount in a config file from one process (what systemd and NixOS run)
    #[command(after_help = SERVE_HELP)]
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// The TOML config
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Only validate the config (no store, no mount)
        #[arg(long)]
        check: bool,
        /// With --check: do not ask systemd whether the units of on-change actions exist (a config built for another host)
        #[arg(long, requires = "check")]
        offline: bool,
        /// For a store in etcd: the local replica the mounts read (config: replica)
        #[arg(long, value_name = "PATH")]
        replica: Option<PathBuf>,
        /// For a store in etcd: this host's name in `fleet status` (config: host) [default: the hostname]
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// Hosts that replicate a store kept in etcd
    #[command(
        after_help = "Examples:\n  vaultfs fleet status --store etcd://10.0.0.1:2379/vaultfs/prod\n  vaultfs fleet status --json"
    )]
    Fleet {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        cmd: FleetCommand,
    },
    /// Host bundles: export sealed vaults for hosts, apply one on a host, show one
    #[command(
        after_help = "Examples:\n  vaultfs bundle export --for web1 > secrets/web1.vfsb\n  vaultfs --identity /etc/ssh/ssh_host_ed25519_key bundle apply web1.vfsb\n  vaultfs --identity host.key bundle show web1.vfsb"
    )]
    Bundle {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        cmd: BundleCommand,
    },
    /// Edit a secret in $EDITOR (a file on a RAM filesystem, wiped afterwards)
    #[command(after_help = "Example:\n  EDITOR=vim vaultfs edit app:/config.env")]
    Edit {
        #[command(flatten)]
        store: StoreArgs,
        /// VAULT:/PATH (created if missing)
        address: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Examples:\n  vaultfs completions bash > /etc/bash_completion.d/vaultfs\n  vaultfs completions zsh > \"${fpath[1]}/_vaultfs\"\n  vaultfs completions fish > ~/.config/fish/completions/vaultfs.fish"
    )]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of vaultfs or of one of its commands
    #[command(
        after_help = "Examples:\n  vaultfs man | man -l -\n  vaultfs man mount > /usr/local/share/man/man1/vaultfs-mount.1"
    )]
    Man {
        /// A command, for its own page (vaultfs-COMMAND(1))
        command: Option<String>,
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

/// `serve --help`: every key of the config file, then an example that `serve --check` accepts.
const SERVE_HELP: &str = "\
Config keys (TOML):
  store = PATH        the store file [default: as for --store]; --store and VAULTFS_STORE win
  key_file = PATH     unlock with this key file; --key-file, VAULTFS_KEY_FILE and
                      --passphrase-file win; without any, a passphrase is asked on the terminal
  A host of a store in etcd (store = \"etcd://HOST:PORT[,...]/PREFIX\", etcds:// for TLS;
  a build with `--features etcd`): a sync task keeps a local replica, the mounts read it.
  replica = PATH      the replica's file (--replica wins); required with an etcd store
  host = NAME         this host's name in `vaultfs fleet status` (--host wins) [default: hostname]
  identity = PATH     the host key that opens its slot (--identity wins)
  etcd_cacert = PATH  CA certificate of the members (--etcd-cacert wins)
  etcd_cert = PATH    client certificate, with etcd_key = PATH (--etcd-cert, --etcd-key win)
  etcd_key = PATH     the client certificate's key
  etcd_user = NAME    etcd user, with etcd_password_file = PATH (first line; never inline)
  etcd_password_file = PATH  the etcd user's password file
  [[mount]]           one table per mount, any number of them:
    source = ADDR     VAULT, VAULT:/DIR or VAULT:/PATH (one secret: the mountpoint is a file)
    mountpoint = PATH absolute; created if missing; each used once
    read_only = BOOL  [default: true]; mounts are read-only, so false is refused
    open_timeout_ms = MS  [default: 2000]; how long an open waits for a locked or stuck
                      store before it fails with EIO (listing and stat never wait)
    kernel_checks = BOOL  [default: false]; the kernel checks access and opens never reach
                      the daemon (reads from the page cache); refused for a vault with
                      templates, grants or read limits; opens are not audited
    On-change actions run when the bytes a reader of the mount would get change (a
    secret's value, a template's rendering): never at start, not for a rewrite with the
    same bytes, once per burst (after a quiet window), retried with backoff on failure:
    restart_units = [UNIT, ...]  systemctl --no-block try-restart UNIT...
    reload_units = [UNIT, ...]   systemctl --no-block try-reload-or-restart UNIT...
    signal = { unit = UNIT, signal = \"HUP\" }  systemctl kill --kill-whom=main
    signal = { pidfile = PATH, signal = \"HUP\" }  the pid in PATH, signalled by the daemon
                      (under the shipped unit, without CAP_KILL: root's processes only)
    exec = [\"/abs/cmd\", ARG, ...]  no shell; a transient unit (systemd-run --wait) under
                      systemd, else a child; a non-zero exit is a failure, retried
    user = NAME       the units above are NAME's user units (systemctl --user -M NAME@)
    quiet_period_ms = MS  [default: 1000]; changes must stay quiet this long first
    A unit that does not exist fails `serve --check` (when systemd can be asked) and is
    logged as an error at start and at every attempt.
    [[mount.on_change]]  actions for one secret, template or directory of the mount:
      path = /PATH    its path in the vault, at or under the mount's source
      restart_units, reload_units, signal, exec, user: as above (at least one action)
  [credentials]       optional: a socket for systemd's LoadCredential=ID:PATH
    socket = PATH     absolute; units connect here at start
    [[credentials.rule]]  one per credential a unit may get; anything else is refused:
      unit = NAME     the full unit name, e.g. \"app.service\"
      id = ID         the ID of LoadCredential=ID:PATH
      source = ADDR   VAULT:/PATH of the secret or template to send
      uid = N         [default: 0] the service manager's uid (0: system; else that user's)
  [audit]             optional: mirror audit records as they commit (never a value)
    mirror = \"auto\"  \"journal\" (structured VAULTFS_* fields), \"stderr\" (one logfmt line),
                      \"auto\" (the journal if its socket exists, else stderr), or \"off\";
                      without [audit], VAULTFS_AUDIT_MIRROR decides (default: off)
    mirror_paths = BOOL  [default: false]; name the secret (VAULTFS_PATH) in mirrored records

Example config (/etc/vaultfs/serve.toml):
  store = \"/var/lib/vaultfs/store.db\"
  key_file = \"/etc/vaultfs/key\"
  [[mount]]
  source = \"nix:/nix-tokens\"
  mountpoint = \"/run/keys/nix-tokens\"
  [[mount]]
  source = \"ssh\"
  mountpoint = \"/run/keys/ssh\"
  read_only = true
  open_timeout_ms = 2000
  [audit]
  mirror = \"auto\"

Example on-change actions:
  [[mount]]
  source = \"web\"
  mountpoint = \"/run/keys/web\"
  restart_units = [\"web-worker.service\"]
  quiet_period_ms = 1000
  [[mount.on_change]]
  path = \"/tls/cert.pem\"
  reload_units = [\"nginx.service\"]
  [[mount.on_change]]
  path = \"/tls\"
  exec = [\"/usr/bin/logger\", \"vaultfs: TLS material rotated\"]

Examples:
  vaultfs serve --check --config /etc/vaultfs/serve.toml
  vaultfs serve --check --offline --config ./serve.toml    # unit names not asked of systemd
  vaultfs --key-file /etc/vaultfs/key serve --config /etc/vaultfs/serve.toml";

/// Where the store is and how to unlock it: only on the commands that open the store. The
/// same options before the command (`vaultfs --key-file K serve ...`) still work; one given
/// after the command wins.
#[derive(Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// The store file (or VAULTFS_STORE) [default: /var/lib/vaultfs/store.db for root, else $XDG_DATA_HOME/vaultfs/store.db]
    #[arg(long, global = true, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Unlock with this key file, made by `vaultfs keygen` (or VAULTFS_KEY_FILE)
    #[arg(long, global = true, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Unlock with the passphrase in this file (first line); without either option, a passphrase is asked on the terminal
    #[arg(long, global = true, value_name = "PATH")]
    pub passphrase_file: Option<PathBuf>,
    /// Accept a store older than one this host has seen (after restoring a backup on purpose)
    #[arg(long, global = true)]
    pub allow_rollback: bool,
    /// Unlock with a host key: an age identity file or an OpenSSH ed25519 private key (or VAULTFS_IDENTITY)
    #[arg(long, global = true, value_name = "PATH")]
    pub identity: Option<PathBuf>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// How to reach a store kept in etcd (`--store etcd://HOST:PORT[,...]/PREFIX`, or `etcds://`
/// for TLS); ignored for a store file. A password is only ever read from a file.
#[derive(Args, Debug, Clone, Default)]
pub struct EtcdArgs {
    /// CA certificate (PEM) of an etcds:// store's members
    #[arg(long, global = true, env = "VAULTFS_ETCD_CACERT", value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd
    #[arg(long, global = true, env = "VAULTFS_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM)
    #[arg(long, global = true, env = "VAULTFS_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (with --etcd-password-file)
    #[arg(long, global = true, env = "VAULTFS_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// File whose first line is the etcd user's password
    #[arg(
        long,
        global = true,
        env = "VAULTFS_ETCD_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub etcd_password_file: Option<PathBuf>,
    /// Connect and request timeout for etcd, in milliseconds
    #[arg(
        long,
        global = true,
        env = "VAULTFS_ETCD_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 3000
    )]
    pub etcd_timeout_ms: u64,
}

impl Cli {
    /// Folds the store options given after the command into the top-level ones, which the
    /// rest of the program reads. Given after the command, they win: they were typed last.
    pub fn absorb_store_args(&mut self) {
        let Some(sub) = self.command.store_args().cloned() else {
            return;
        };
        if sub.store.is_some() {
            self.store = sub.store;
        }
        self.allow_rollback |= sub.allow_rollback;
        if sub.identity.is_some() {
            self.identity = sub.identity;
        }
        if sub.key_file.is_some() || sub.passphrase_file.is_some() {
            self.key_file = sub.key_file;
            self.passphrase_file = sub.passphrase_file;
        }
        self.etcd = sub.etcd;
    }
}

impl Command {
    /// The store options of a command that opens the store.
    fn store_args(&self) -> Option<&StoreArgs> {
        match self {
            Command::Init { store, .. }
            | Command::Migrate { store }
            | Command::Key { store, .. }
            | Command::Vault { store, .. }
            | Command::Write { store, .. }
            | Command::Gc { store, .. }
            | Command::Audit { store, .. }
            | Command::Wrap { store, .. }
            | Command::Unwrap { store, .. }
            | Command::Import { store, .. }
            | Command::Cat { store, .. }
            | Command::Ls { store, .. }
            | Command::Rm { store, .. }
            | Command::Mv { store, .. }
            | Command::Mkdir { store, .. }
            | Command::Acl { store, .. }
            | Command::Template { store, .. }
            | Command::Env { store, .. }
            | Command::Watch { store, .. }
            | Command::Mount { store, .. }
            | Command::Serve { store, .. }
            | Command::Fleet { store, .. }
            | Command::Bundle { store, .. }
            | Command::Edit { store, .. } => Some(store),
            Command::Keygen { .. }
            | Command::Umount { .. }
            | Command::Demo { .. }
            | Command::Completions { .. }
            | Command::Man { .. } => None,
        }
    }
}

/// `vaultfs fleet ...`
#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// One line per host: the etcd revision it applied, the store's, whether it converged, its last ack
    #[command(
        after_help = "Example:\n  vaultfs fleet status --store etcd://127.0.0.1:2379/vaultfs/prod"
    )]
    Status {
        /// JSON for machines
        #[arg(long)]
        json: bool,
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
    #[command(after_help = "Examples:\n  vaultfs key list\n  vaultfs key list --json")]
    List {
        /// JSON for scripts
        #[arg(long)]
        json: bool,
    },
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
        /// A host's public key: age1... or "ssh-ed25519 AAAA..." (no secret needed)
        #[arg(long, value_name = "PUBKEY", conflicts_with_all = ["new_key_file", "new_passphrase_file"])]
        recipient: Option<String>,
        /// With --recipient: open only this vault (repeat for more); the slot never holds the master key
        #[arg(long = "vault", value_name = "VAULT", requires = "recipient")]
        vaults: Vec<String>,
        /// A name for the slot, shown by `key list`
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Fresh master and vault keys: re-encrypt everything, keep one slot for the key given
    #[command(
        after_help = "Removes every other key slot (listed first). Mounts made before must be remounted.\nExample:\n  vaultfs --key-file /etc/vaultfs/key key rotate --yes"
    )]
    Rotate {
        /// Do not ask (required when stdin is not a terminal)
        #[arg(long)]
        yes: bool,
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

/// `vaultfs bundle ...`
#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Write a bundle of sealed vaults and the host-key slots that open them to stdout
    #[command(
        after_help = "Examples:\n  vaultfs bundle export --for web1 > secrets/web1.vfsb\n  vaultfs bundle export --vault nix --vault web > all.vfsb"
    )]
    Export {
        /// A vault to include (repeat; default: all, or all the --for slot opens)
        #[arg(long = "vault", value_name = "VAULT")]
        vaults: Vec<String>,
        /// Only this host-key slot (by label) and the vaults it opens
        #[arg(long = "for", value_name = "LABEL")]
        for_label: Option<String>,
    },
    /// Make this host's store a replica of a bundle (one transaction; an older bundle is refused)
    #[command(
        after_help = "Example:\n  vaultfs --identity /etc/ssh/ssh_host_ed25519_key --store /var/lib/vaultfs/store.db bundle apply web1.vfsb"
    )]
    Apply {
        /// The bundle file
        file: PathBuf,
        /// An older bundle is a warning, not an error, and the newer state keeps serving (service start)
        #[arg(long)]
        keep_newer: bool,
    },
    /// List what a bundle holds that the key given can see (writes nothing)
    #[command(after_help = "Example:\n  vaultfs --identity host.key bundle show web1.vfsb")]
    Show {
        /// The bundle file
        file: PathBuf,
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
    #[command(after_help = "Examples:\n  vaultfs vault list\n  vaultfs vault list --json")]
    List {
        /// JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Remove a vault
    #[command(after_help = "Example:\n  vaultfs vault remove old --force")]
    Remove {
        /// Its name
        name: String,
        /// Remove it even when it holds secrets
        #[arg(long)]
        force: bool,
        /// Remove it even when it is mounted on this host (asked on a terminal otherwise)
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `vaultfs template ...`
#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Create or replace a template: text whose `{{ VAULT:/path }}` placeholders are filled
    /// with secrets of the same vault at each open (filters: `| trim`, `| json`, `| raw`)
    #[command(
        after_help = "A value holding a line break (or, in a json template, a quote or backslash) is\nrefused at render unless the placeholder says `| raw` (or `| json`): a secret cannot add\nlines to a config file. `{{ \"{{\" }}` writes a literal `{{`.\n\nExample:\n  printf 'access-tokens = github.com={{ nix:/gh | trim }}\\n' | vaultfs template set nix:/nix.conf"
    )]
    Set {
        /// VAULT:/PATH
        address: String,
        /// Read the template from FILE instead of stdin
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// What it renders into: text, ini or json (decides what a value may hold)
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Print a template's text (not its rendering: `vaultfs cat` renders)
    Show {
        /// VAULT:/PATH
        address: String,
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
        /// JSON for scripts
        #[arg(long)]
        json: bool,
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
    /// Remove an entry's override so it inherits again (all three, or those named)
    #[command(
        after_help = "Examples:\n  vaultfs acl unset ssh:/id_ed25519            # owner, group and mode inherited again\n  vaultfs acl unset ssh:/id_ed25519 --mode     # only the mode"
    )]
    Unset {
        /// VAULT:/PATH (a vault's own defaults can only be changed)
        address: String,
        /// The owner override only
        #[arg(long)]
        owner: bool,
        /// The group override only
        #[arg(long)]
        group: bool,
        /// The mode override only
        #[arg(long)]
        mode: bool,
    },
    /// Give one more user or group read access to an entry and everything below it,
    /// optionally only for the processes of one systemd unit or one executable
    #[command(
        after_help = "Examples:\n  vaultfs acl grant web:/tls --user nginx --unit nginx.service\n  vaultfs acl grant ssh:/deploy_key --group deploy --exe /usr/bin/ssh"
    )]
    Grant(GrantArgs),
    /// Remove a grant set on this entry (a grant inherited from above is revoked there)
    #[command(
        after_help = "Example:\n  vaultfs acl revoke web:/tls --user nginx --unit nginx.service"
    )]
    Revoke(GrantArgs),
    /// Set the expiry and read limit of a secret's current value; keeps the value, the time it
    /// was written and how many opens it has served; writes nothing when already so
    #[command(
        after_help = "Examples:\n  vaultfs acl limit ci:/deploy-key --expires 2026-12-31T00:00:00Z\n  vaultfs acl limit ci:/token --ttl 24h          # 24h after the value was written\n  vaultfs acl limit ci:/handoff --max-opens 1\n  vaultfs acl limit ci:/token --clear            # no limits\n  vaultfs acl limit ci:/token --clear --max-opens 3   # exactly these limits"
    )]
    Limit(LimitSetArgs),
}

/// `vaultfs acl limit` options.
#[derive(clap::Args, Debug)]
pub struct LimitSetArgs {
    /// VAULT:/PATH of a secret
    pub address: String,
    /// Remove every limit first; with other options, the value ends with exactly those
    #[arg(long)]
    pub clear: bool,
    /// A secret that does not exist (yet) is noted and skipped, exit 0 (for the NixOS module)
    #[arg(long)]
    pub if_exists: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `vaultfs audit` options.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// `prune --before T`
    #[command(subcommand)]
    pub cmd: Option<AuditCommand>,
    /// Only this vault (default: every vault)
    pub vault: Option<String>,
    /// Only this entry, or everything under this directory (VAULT:/PATH)
    #[arg(long)]
    pub path: Option<String>,
    /// Only this caller (user name or uid)
    #[arg(long)]
    pub user: Option<String>,
    /// Only callers in this unit (its name or cgroup path)
    #[arg(long)]
    pub unit: Option<String>,
    /// Only since this RFC 3339 time, or this long ago (1h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// Only refusals and alarms
    #[arg(long)]
    pub denied: bool,
    /// JSON for scripts
    #[arg(long)]
    pub json: bool,
    /// Check every vault's chain and head instead of listing (exit 3 when broken)
    #[arg(long)]
    pub verify: bool,
}

/// `vaultfs audit prune`.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Delete the records older than a time (the chain's verified start moves forward)
    #[command(after_help = "Example:\n  vaultfs audit prune --before 2026-01-01T00:00:00Z")]
    Prune {
        /// RFC 3339 time
        #[arg(long)]
        before: String,
        /// Only this vault (default: every vault)
        vault: Option<String>,
    },
}

/// How long and how often a written value is served.
#[derive(clap::Args, Debug, Default)]
pub struct LimitArgs {
    /// Stop serving the value at this RFC 3339 time (2026-12-31T00:00:00Z)
    #[arg(long, conflicts_with = "ttl")]
    pub expires: Option<String>,
    /// Stop serving the value this long after it was written (24h, 10m, 1h30m, 7d)
    #[arg(long)]
    pub ttl: Option<String>,
    /// Serve the value to at most N opens through mounts (counted on this host)
    #[arg(long, value_name = "N")]
    pub max_opens: Option<u64>,
}

/// A grant as written on the command line.
#[derive(clap::Args, Debug)]
pub struct GrantArgs {
    /// VAULT:/PATH (a directory or a secret)
    pub address: String,
    /// The user granted read access
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    pub user: Option<String>,
    /// The group granted read access
    #[arg(long)]
    pub group: Option<String>,
    /// Only processes of this systemd unit: a system unit name (nginx.service, meaning
    /// /system.slice/nginx.service) or a full cgroup path
    #[arg(long)]
    pub unit: Option<String>,
    /// Only processes running this executable (matched by device and inode at each open)
    #[arg(long)]
    pub exe: Option<String>,
}
