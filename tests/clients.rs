//! Real programs reading secrets through a mount: nix, curl, OpenSSH, bubblewrap. Each tool is
//! installed by .ci/run; under CI a missing one fails the test.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{require_tool, TestStore};
use crate::mounts::*;

/// `nix show-config` with a nix.conf that includes the mounted secret file.
fn nix_access_tokens(conf_dir: &Path) -> String {
    let out = Command::new("nix")
        .arg("show-config")
        .env("NIX_CONF_DIR", conf_dir)
        .env("NIX_USER_CONF_FILES", "")
        .env_remove("NIX_CONFIG")
        .output()
        .expect("run nix");
    assert!(
        out.status.success(),
        "nix show-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("access-tokens = "))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn nix_reads_access_tokens_through_a_single_file_mount_and_sees_rotation() {
    if !can_mount() || !require_tool("nix") {
        return;
    }
    let ts = TestStore::new();
    ts.vault("nix", &["--mode", "0400"]);
    ts.write(
        "nix:/nix-tokens",
        b"extra-access-tokens = github.com=ghp_first0000\n",
    );
    let tokens = ts.path("run/keys/nix-tokens");
    let _m = ts.mount("nix:/nix-tokens", &tokens);
    let conf = ts.path("nix-conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        format!(
            "experimental-features = nix-command\n!include {}\n",
            tokens.display()
        ),
    )
    .unwrap();
    assert_eq!(
        nix_access_tokens(&conf),
        "access-tokens = github.com=ghp_first0000"
    );
    ts.write(
        "nix:/nix-tokens",
        b"extra-access-tokens = github.com=ghp_rotated111\n",
    );
    assert_eq!(
        nix_access_tokens(&conf),
        "access-tokens = github.com=ghp_rotated111"
    );
}

/// Accepts one HTTP request on a loopback port and returns its Authorization header.
fn serve_one_request(listener: TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut auth = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("Authorization: ") {
                auth = v.trim().to_owned();
            }
        }
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        auth
    })
}

#[test]
fn curl_sends_credentials_from_a_netrc_symlinked_into_the_mount() {
    if !can_mount() || !require_tool("curl") {
        return;
    }
    let ts = TestStore::new();
    ts.vault("web", &["--mode", "0400"]);
    ts.write(
        "web:/netrc",
        b"machine 127.0.0.1 login deploy password s3cr3t-pw\n",
    );
    let mnt = ts.path("mnt");
    let _m = ts.mount("web", &mnt);
    let home = ts.path("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::symlink(mnt.join("netrc"), home.join(".netrc")).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve_one_request(listener);
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--netrc", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"ok");
    // base64("deploy:s3cr3t-pw")
    assert_eq!(server.join().unwrap(), "Basic ZGVwbG95OnMzY3IzdC1wdw==");
}

#[test]
fn ssh_keygen_accepts_a_0400_key_owned_by_its_user_and_rejects_an_open_mode() {
    if !can_mount() || !require_tool("ssh-keygen") {
        return;
    }
    let ts = TestStore::new();
    user("vfs-ssh", None);
    let keydir = ts.path("keygen");
    std::fs::create_dir(&keydir).unwrap();
    let key = keydir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vaultfs-test", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let private = std::fs::read(&key).unwrap();
    let public = std::fs::read_to_string(keydir.join("id_ed25519.pub")).unwrap();
    std::fs::remove_file(&key).unwrap();

    ts.vault(
        "ssh",
        &["--owner", "vfs-ssh", "--group", "vfs-ssh", "--mode", "0400"],
    );
    ts.write("ssh:/id_ed25519", &private);
    let mnt = ts.path("mnt");
    let _m = ts.mount("ssh", &mnt);
    let mounted_key = mnt.join("id_ed25519");
    let derive = || {
        as_user(
            "vfs-ssh",
            &format!("ssh-keygen -y -f '{}'", mounted_key.display()),
        )
    };

    let out = derive();
    assert!(
        out.status.success(),
        "ssh-keygen -y: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let derived = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        derived.split_whitespace().take(2).collect::<Vec<_>>(),
        public.split_whitespace().take(2).collect::<Vec<_>>()
    );

    // With group-readable bits ssh refuses the key: the modes the mount shows are real.
    ts.ok(&["acl", "set", "ssh:/id_ed25519", "--mode", "0440"]);
    wait_until(Duration::from_millis(1500), "the new mode", || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&mounted_key).unwrap().mode() & 0o777 == 0o440
    });
    let out = derive();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UNPROTECTED PRIVATE KEY FILE"), "{err}");
}

#[test]
fn bubblewrap_sandbox_reads_a_read_only_bind_of_the_mount() {
    if !can_mount() || !require_tool("bwrap") {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &["--mode", "0444"]);
    ts.write("app:/db-password", b"sandboxed-value");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    let single = ts.path("db-password");
    let _s = ts.mount("app:/db-password", &single);
    let out = Command::new("bwrap")
        .args([
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/run",
        ])
        .arg("--ro-bind")
        .arg(&mnt)
        .arg("/run/secrets")
        .arg("--ro-bind")
        .arg(&single)
        .arg("/run/one-secret")
        .args([
            "--unshare-all",
            "--die-with-parent",
            "sh",
            "-c",
            "cat /run/secrets/db-password; echo; cat /run/one-secret; echo; \
             echo x > /run/secrets/db-password 2>/dev/null && echo WRITABLE || echo read-only",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bwrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sandboxed-value\nsandboxed-value\nread-only\n"
    );
}
