//! The credential socket of `vaultfs serve`, driven the way systemd's `LoadCredential=` drives
//! it: a client bound to the abstract address `\0<16 hex>/unit/<unit>/<ID>` connects, shuts
//! down its sending side and reads until the end. Direct tests here; under a real systemd 252
//! in `systemd_unit_gets_its_credential`.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{random_bytes, random_name, require_tool, TestStore};
use crate::mounts::{as_user, can_mount, user, wait_until, within};

/// A `vaultfs serve` child; SIGTERM and reaped on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) socket: PathBuf,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `[[credentials.rule]]` lines: (uid, unit, id, source).
fn config(socket: &Path, rules: &[(u32, &str, &str, &str)]) -> String {
    let mut text = format!("[credentials]\nsocket = \"{}\"\n", socket.display());
    for (uid, unit, id, source) in rules {
        text.push_str(&format!(
            "[[credentials.rule]]\nuid = {uid}\nunit = \"{unit}\"\nid = \"{id}\"\nsource = \"{source}\"\n"
        ));
    }
    text
}

pub(crate) fn serve(ts: &TestStore, rules: &[(u32, &str, &str, &str)]) -> Server {
    let socket = ts.path("run").join("credentials.sock");
    let cfg = ts.path("serve.toml");
    std::fs::write(&cfg, config(&socket, rules)).unwrap();
    let log = ts.path("serve.log");
    let child = ts
        .cmd()
        .env("VAULTFS_LOG", "info")
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn vaultfs serve");
    let server = Server { child, socket, log };
    wait_until(Duration::from_secs(10), "the credential socket", || {
        server.socket.exists()
    });
    server
}

/// Connects as systemd does: bound to `\0<16 hex>/unit/UNIT/ID`, write side shut down.
fn connect(socket: &Path, unit: &str, id: &str) -> UnixStream {
    let hex: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("{hex}/unit/{unit}/{id}");
    // SAFETY: plain socket calls on a fresh fd with valid, fully initialized addresses.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = UnixStream::from_raw_fd(fd);
        let (local, local_len) = sockaddr(&[&[0u8][..], name.as_bytes()].concat());
        let rc = libc::bind(fd, std::ptr::addr_of!(local).cast(), local_len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let path = socket.as_os_str().as_encoded_bytes();
        let (remote, remote_len) = sockaddr(path);
        let rc = libc::connect(fd, std::ptr::addr_of!(remote).cast(), remote_len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

fn sockaddr(path: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(path.len() < addr.sun_path.len());
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len();
    (addr, len as libc::socklen_t)
}

/// Asks for a credential the way systemd does: the bytes, or the read error.
pub(crate) fn ask(socket: &Path, unit: &str, id: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = connect(socket, unit, id);
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(out)
}

/// What the socket answers a refused systemd peer: a line repeated past systemd's 1 MiB
/// credential limit, so that systemd fails the unit instead of starting it with an empty file.
const REFUSAL_LINE: &[u8] =
    b"vaultfs: credential refused (no rule grants it); see the vaultfs log\n";

fn is_refusal(bytes: &[u8]) -> bool {
    bytes.len() > 1024 * 1024 && bytes.chunks(REFUSAL_LINE.len()).all(|c| c == REFUSAL_LINE)
}

pub(crate) fn assert_refused(result: std::io::Result<Vec<u8>>, what: &str) {
    match result {
        Ok(bytes) if is_refusal(&bytes) => {}
        Ok(bytes) => panic!("{what}: expected the refusal, got {} bytes", bytes.len()),
        Err(e) => panic!("{what}: expected the refusal, got {e}"),
    }
}

#[test]
fn a_unit_gets_exactly_its_credential_and_nothing_else() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let secret = random_bytes(300);
    let other = random_bytes(40);
    let addr = format!("{vault}:/tok");
    ts.write(&addr, &secret);
    ts.write(&format!("{vault}:/other"), &other);
    let server = serve(
        &ts,
        &[
            (0, "consumer.service", "tok", &addr),
            (0, "gone.service", "tok", &format!("{vault}:/missing")),
        ],
    );
    let socket = server.socket.clone();
    let got = within(Duration::from_secs(10), "a granted request", move || {
        ask(&socket, "consumer.service", "tok")
    });
    assert_eq!(got.expect("granted"), secret, "the exact bytes");

    // A rotation is seen at the next request.
    let rotated = random_bytes(17);
    ts.write(&addr, &rotated);
    assert_eq!(
        ask(&server.socket, "consumer.service", "tok").unwrap(),
        rotated
    );

    // No rule: another unit, another id, or a rule whose secret is missing: the refusal, never
    // an empty answer (which systemd would take as an empty credential).
    assert_refused(
        ask(&server.socket, "intruder.service", "tok"),
        "another unit",
    );
    assert_refused(
        ask(&server.socket, "consumer.service", "other"),
        "another id",
    );
    assert_refused(
        ask(&server.socket, "gone.service", "tok"),
        "a missing secret",
    );
    // A client that is not systemd (no abstract address) gets nothing either.
    let mut plain = UnixStream::connect(&server.socket).unwrap();
    plain.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    assert!(plain.read_to_end(&mut buf).is_err() || buf.is_empty());
    assert!(buf.is_empty());

    let log = server.log();
    assert!(
        log.contains("credential sent: unit consumer.service (uid 0) id tok"),
        "{log}"
    );
    assert!(
        log.contains("credential refused: unit intruder.service (uid 0) asked for id tok"),
        "{log}"
    );
    assert!(log.contains("no secret at"), "{log}");
    for value in [&secret, &rotated, &other] {
        assert!(
            !crate::common::contains(log.as_bytes(), value),
            "a value in the log"
        );
    }
}

#[test]
fn a_user_managers_uid_is_matched_per_rule() {
    if !can_mount() || !require_tool("python3") || !require_tool("runuser") {
        return;
    }
    let bob = "vfs-deliver-bob";
    let bob_uid = user(bob, None);
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let bobs = random_bytes(24);
    let roots = random_bytes(24);
    ts.write(&format!("{vault}:/bob"), &bobs);
    ts.write(&format!("{vault}:/root"), &roots);
    let bob_addr = format!("{vault}:/bob");
    let root_addr = format!("{vault}:/root");
    let server = serve(
        &ts,
        &[
            (bob_uid, "app.service", "tok", &bob_addr),
            (0, "sys.service", "tok", &root_addr),
        ],
    );
    // The socket must be reachable by a user manager.
    let script = |unit: &str| {
        format!(
            "python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(b\"\\0\" + os.urandom(8).hex().encode() + b\"/unit/{unit}/tok\")
s.connect(\"{sock}\")
s.shutdown(socket.SHUT_WR)
s.settimeout(10)
out = b\"\"
try:
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
except ConnectionResetError:
    print(\"RESET\"); sys.exit(0)
line = b\"vaultfs: credential refused (no rule grants it); see the vaultfs log\\n\"
if len(out) > 1024 * 1024 and out == line * (len(out) // len(line)):
    print(\"REFUSED\"); sys.exit(0)
print(out.hex())
'",
            sock = server.socket.display()
        )
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let run = |unit: &str| {
        let out = as_user(bob, &script(unit));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(
        run("app.service"),
        hex(&bobs),
        "bob's manager gets bob's rule"
    );
    assert_eq!(
        run("sys.service"),
        "REFUSED",
        "bob cannot claim a system unit"
    );
    // Root asking for the unit of bob's rule is not bob.
    assert_refused(
        ask(&server.socket, "app.service", "tok"),
        "uid 0 for bob's rule",
    );
    assert_eq!(ask(&server.socket, "sys.service", "tok").unwrap(), roots);
    let log = server.log();
    assert!(
        log.contains(&format!(
            "credential sent: unit app.service (uid {bob_uid}) id tok"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "credential refused: unit sys.service (uid {bob_uid})"
        )),
        "{log}"
    );
}

#[test]
fn a_client_that_never_reads_or_vanishes_blocks_nobody() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    // Far larger than a socket buffer: its writer blocks until the client reads.
    let big = random_bytes(1024 * 1024);
    let small = random_bytes(32);
    ts.write(&format!("{vault}:/big"), &big);
    ts.write(&format!("{vault}:/small"), &small);
    let big_addr = format!("{vault}:/big");
    let small_addr = format!("{vault}:/small");
    let server = serve(
        &ts,
        &[
            (0, "big.service", "tok", &big_addr),
            (0, "small.service", "tok", &small_addr),
        ],
    );
    // Several clients that connect and never read, and several that vanish at once.
    let stuck: Vec<UnixStream> = (0..2)
        .map(|_| connect(&server.socket, "big.service", "tok"))
        .collect();
    for _ in 0..2 {
        drop(connect(&server.socket, "big.service", "tok"));
    }
    // The big value is read and being written (blocked) before the small requests come.
    std::thread::sleep(Duration::from_millis(1000));
    for _ in 0..3 {
        let socket = server.socket.clone();
        let got = within(
            Duration::from_secs(2),
            "a request behind stuck clients",
            move || ask(&socket, "small.service", "tok"),
        );
        assert_eq!(got.unwrap(), small);
    }
    // A stuck client that finally reads gets the whole value (within the write timeout).
    let mut first = stuck.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = Vec::new();
    let read = first.read_to_end(&mut out);
    assert!(
        read.is_ok() && out == big,
        "the slow client got {} bytes ({read:?})\n{}",
        out.len(),
        server.log()
    );
}

#[test]
fn a_stale_socket_is_replaced_and_sigterm_removes_the_socket() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let secret = random_bytes(20);
    let addr = format!("{vault}:/tok");
    ts.write(&addr, &secret);
    let rules = [(0, "consumer.service", "tok", addr.as_str())];
    // A daemon killed outright leaves its socket file behind.
    let mut crashed = serve(&ts, &rules);
    crashed.child.kill().unwrap();
    crashed.child.wait().unwrap();
    assert!(crashed.socket.exists());
    std::mem::forget(crashed);
    let mut server = serve(&ts, &rules);
    wait_until(Duration::from_secs(10), "the new daemon to listen", || {
        server.log().contains("serving credentials")
    });
    assert_eq!(
        ask(&server.socket, "consumer.service", "tok").unwrap(),
        secret
    );
    // SIGTERM: exit 0, socket removed.
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    let status = within(Duration::from_secs(10), "serve to exit on SIGTERM", {
        let mut child = std::mem::replace(&mut server.child, Command::new("true").spawn().unwrap());
        move || child.wait().unwrap()
    });
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(!server.socket.exists(), "the socket file is left behind");
}

#[test]
fn serve_check_accepts_and_rejects_credentials_configs() {
    let ts = TestStore::new();
    let socket = ts.path("c.sock");
    let cfg = ts.path("serve.toml");
    std::fs::write(&cfg, config(&socket, &[(0, "a.service", "tok", "v:/t")])).unwrap();
    let out = ts.ok(&["serve", "--check", "--config", cfg.to_str().unwrap()]);
    let _ = out;
    std::fs::write(&cfg, config(&socket, &[(0, "a/b.service", "tok", "v:/t")])).unwrap();
    let err = ts.fails(&["serve", "--check", "--config", cfg.to_str().unwrap()], 2);
    assert!(err.contains("credentials rule #1: unit"), "{err}");
}

// ---- under a real systemd 252 ----

fn systemd_boot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/systemd-boot")
}

#[test]
fn systemd_unit_gets_its_credential_and_a_denied_unit_fails() {
    if !can_mount() || !require_tool("systemd-nspawn") {
        return;
    }
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    let secret = random_bytes(64);
    let addr = format!("{vault}:/tok");
    ts.write(&addr, &secret);

    // Everything the container needs, under /opt/vaultfs inside.
    let stage = ts.path("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(crate::common::vaultfs_bin(), stage.join("vaultfs")).unwrap();
    std::fs::copy(&ts.key, stage.join("key")).unwrap();
    let store_dir = ts.store.parent().unwrap();
    std::fs::write(
        stage.join("serve.toml"),
        format!(
            "store = \"/var/lib/vaultfs-test/store.db\"\n{}",
            config(
                Path::new("/run/vaultfs/credentials.sock"),
                &[(0, "consumer.service", "tok", &addr)]
            )
        ),
    )
    .unwrap();
    let units = ts.path("units");
    std::fs::create_dir_all(&units).unwrap();
    let unit = |name: &str, text: &str| {
        let path = units.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The shipped, hardened unit (its system-call filter, capabilities and address families),
    // with the paths of this container.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/vaultfs.service"),
    )
    .expect("contrib/systemd/vaultfs.service");
    let server = unit(
        "vaultfs.service",
        &shipped
            .replace("/usr/local/bin/vaultfs", "/opt/vaultfs/vaultfs")
            .replace("/etc/vaultfs/", "/opt/vaultfs/")
            .replace("[Service]\n", "[Service]\nEnvironment=VAULTFS_LOG=info\n"),
    );
    let consumer = unit(
        "consumer.service",
        "[Unit]\nAfter=vaultfs.service\nRequires=vaultfs.service\n[Service]\nType=oneshot\nLoadCredential=tok:/run/vaultfs/credentials.sock\nExecStart=/usr/bin/sh -c 'cp \"$CREDENTIALS_DIRECTORY/tok\" /out/consumer.tok'\n",
    );
    let denied = unit(
        "denied.service",
        "[Unit]\nAfter=vaultfs.service\nRequires=vaultfs.service\n[Service]\nType=oneshot\nLoadCredential=tok:/run/vaultfs/credentials.sock\nExecStart=/usr/bin/sh -c 'wc -c <\"$CREDENTIALS_DIRECTORY/tok\" >/out/denied.size'\n",
    );
    let probe = unit(
        "probe.service",
        "[Unit]\nAfter=vaultfs.service\n[Service]\nType=oneshot\nExecStart=/usr/bin/sh -c 'systemctl start consumer.service; echo $? >/out/consumer.rc; systemctl start denied.service; echo $? >/out/denied.rc; systemctl show -p Result denied.service >/out/denied.result; journalctl -b --no-pager >/out/journal.txt'\n",
    );
    let out = ts.path("out");
    let mut cmd = Command::new(systemd_boot());
    cmd.args(["--run", "probe.service", "--out", out.to_str().unwrap()]);
    for u in [&server, &consumer, &denied, &probe] {
        cmd.args(["--unit", u.to_str().unwrap()]);
    }
    cmd.args([
        "--ro",
        &format!("{}:/opt/vaultfs", stage.display()),
        "--bind",
        &format!("{}:/var/lib/vaultfs-test", store_dir.display()),
        "--timeout",
        "60",
    ]);
    let status = within(Duration::from_secs(90), "systemd-boot", move || {
        cmd.status()
    })
    .expect("run tests/support/systemd-boot");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let journal = read("journal.txt");
    let context = || {
        format!(
            "status {status:?}\nboot.log:\n{}\njournal:\n{journal}",
            read("boot.log")
        )
    };
    assert_eq!(read("consumer.rc").trim(), "0", "{}", context());
    assert_eq!(
        std::fs::read(out.join("consumer.tok")).unwrap_or_default(),
        secret,
        "{}",
        context()
    );
    // systemd 252 fails the unit on the oversized refusal: no empty credential.
    assert_ne!(read("denied.rc").trim(), "0", "{}", context());
    assert!(
        journal.contains("denied.service: Failed to set up credentials"),
        "{}",
        context()
    );
    assert!(
        journal
            .contains("denied.service: Main process exited, code=exited, status=243/CREDENTIALS"),
        "{}",
        context()
    );
    assert!(!out.join("denied.size").exists(), "{}", context());
    assert!(
        journal.contains("credential refused: unit denied.service (uid 0) asked for id tok"),
        "{}",
        context()
    );
    assert!(
        !crate::common::contains(journal.as_bytes(), &secret),
        "the value in the journal"
    );
}

#[test]
fn a_template_is_sent_rendered_from_the_current_values() {
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &[]);
    ts.write(&format!("{vault}:/gh"), b"ghp_one\n");
    let text = format!("machine github.com password {{{{ {vault}:/gh | trim }}}}\n");
    let set = ts.run(
        &["template", "set", &format!("{vault}:/netrc")],
        text.as_bytes(),
    );
    assert!(set.status.success(), "{set:?}");
    let server = serve(
        &ts,
        &[(0, "consumer.service", "netrc", &format!("{vault}:/netrc"))],
    );
    assert_eq!(
        ask(&server.socket, "consumer.service", "netrc").unwrap(),
        b"machine github.com password ghp_one\n"
    );
    ts.write(&format!("{vault}:/gh"), b"ghp_two\n");
    assert_eq!(
        ask(&server.socket, "consumer.service", "netrc").unwrap(),
        b"machine github.com password ghp_two\n"
    );
    // An input removed: refused, never a half-rendered credential.
    ts.ok(&["rm", &format!("{vault}:/gh")]);
    assert_refused(
        ask(&server.socket, "consumer.service", "netrc"),
        "a broken template",
    );
}
