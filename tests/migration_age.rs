//! Migration from agenix and sops: real `.age` files made by the `age` CLI (to an age key and
//! to an ssh-ed25519 host key, binary and armored), and real YAML, JSON and dotenv documents
//! as `sops -d` prints them.

use std::path::Path;
use std::process::Command;

use crate::common::{assert_fails, assert_success, require_tool, run_command, TestStore};
use crate::hostkeys::{age_key, ssh_key};

/// `age [-a] -r|-R RECIPIENT -o OUT` with `value` on stdin.
fn age_encrypt(recipient_flag: &str, recipient: &str, armor: bool, value: &[u8], out: &Path) {
    assert!(require_tool("age"));
    let mut cmd = Command::new("age");
    if armor {
        cmd.arg("-a");
    }
    cmd.args([recipient_flag, recipient, "-o"]).arg(out);
    let res = run_command(&mut cmd, value);
    assert!(res.status.success(), "age: {res:?}");
}

#[test]
fn agenix_files_become_secrets_named_after_the_file() {
    let ts = TestStore::new();
    ts.vault("app", &["--owner", "root", "--group", "root"]);
    let (host, _) = ssh_key(ts.dir.path(), "ssh_host_ed25519_key", "ed25519");
    let pubfile = host.with_extension("pub");
    let dir = ts.dir.path().join("secrets");
    std::fs::create_dir(&dir).unwrap();
    let binary: Vec<u8> = (0..=255u8).collect();
    age_encrypt(
        "-R",
        pubfile.to_str().unwrap(),
        false,
        b"tok\n",
        &dir.join("nix-tokens.age"),
    );
    age_encrypt(
        "-R",
        pubfile.to_str().unwrap(),
        true,
        &binary,
        &dir.join("blob.age"),
    );
    let files = [dir.join("nix-tokens.age"), dir.join("blob.age")];
    let mut args = vec![
        "import",
        "app:/agenix",
        "--identity",
        host.to_str().unwrap(),
        "--age",
    ];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = ts.run(&args, b"");
    assert_success(&out, &args);
    assert_eq!(ts.cat("app:/agenix/nix-tokens"), b"tok\n");
    assert_eq!(ts.cat("app:/agenix/blob"), binary);

    // An age identity file works the same; a key the file is not for fails and writes nothing.
    let (age_id, age_pub) = age_key(ts.dir.path(), "admin.key");
    age_encrypt("-r", &age_pub, false, b"db-pass", &dir.join("db.age"));
    let out = ts.run(
        &[
            "import",
            "app",
            "--age-identity",
            age_id.to_str().unwrap(),
            "--age",
            dir.join("db.age").to_str().unwrap(),
        ],
        b"",
    );
    assert_success(&out, &["import --age db.age"]);
    assert_eq!(ts.cat("app:/db"), b"db-pass");
    let (wrong, _) = age_key(ts.dir.path(), "wrong.key");
    age_encrypt("-r", &age_pub, false, b"other", &dir.join("other.age"));
    let other = dir.join("other.age");
    let args = [
        "import",
        "app",
        "--age-identity",
        wrong.to_str().unwrap(),
        "--age",
        other.to_str().unwrap(),
    ];
    let line = ts.fails_any(&args);
    assert!(
        line.contains("other.age") && line.contains("not encrypted to this key"),
        "{line}"
    );
    let ls = ts.ok_text(&["ls", "app"]);
    assert!(!ls.contains("other"), "{ls}");
}

#[test]
fn yaml_json_and_dotenv_documents_import_each_key() {
    let ts = TestStore::new();
    ts.vault("app", &["--owner", "root", "--group", "root"]);
    // What `sops -d secrets.yaml` prints: nested maps, numbers, a block scalar.
    let yaml = b"db:\n  user: admin\n  password: \"p@ss: word\"\nport: 5432\ntls_key: |\n  -----BEGIN KEY-----\n  abc\n  -----END KEY-----\nenabled: true\n";
    let out = ts.run(&["import", "--format", "yaml", "app:/yaml"], yaml);
    assert_success(&out, &["import --format yaml"]);
    assert_eq!(ts.cat("app:/yaml/db/user"), b"admin");
    assert_eq!(ts.cat("app:/yaml/db/password"), b"p@ss: word");
    assert_eq!(ts.cat("app:/yaml/port"), b"5432");
    assert_eq!(
        ts.cat("app:/yaml/tls_key"),
        b"-----BEGIN KEY-----\nabc\n-----END KEY-----\n"
    );
    assert_eq!(ts.cat("app:/yaml/enabled"), b"true");

    let json = br#"{"api": {"token": "t-123"}, "n": 7, "quote": "a \"b\""}"#;
    let out = ts.run(&["import", "--format", "json", "app:/json"], json);
    assert_success(&out, &["import --format json"]);
    assert_eq!(ts.cat("app:/json/api/token"), b"t-123");
    assert_eq!(ts.cat("app:/json/n"), b"7");
    assert_eq!(ts.cat("app:/json/quote"), b"a \"b\"");

    let dotenv =
        b"# comment\nexport AWS_KEY=AKIA123\nAWS_SECRET=\"line1\\nline2\"\nEMPTY=\nSINGLE='x y'\n";
    let out = ts.run(&["import", "--format", "dotenv", "app:/env"], dotenv);
    assert_success(&out, &["import --format dotenv"]);
    assert_eq!(ts.cat("app:/env/AWS_KEY"), b"AKIA123");
    assert_eq!(ts.cat("app:/env/AWS_SECRET"), b"line1\nline2");
    assert_eq!(ts.cat("app:/env/SINGLE"), b"x y");
    assert_eq!(ts.ok(&["cat", "app:/env/EMPTY"]), b"");

    // Bad documents: one line, exit 2, nothing written.
    for (format, doc, what) in [
        ("yaml", &b"a: [1, 2]\n"[..], "list"),
        ("json", &b"{\"a\": "[..], "JSON"),
        ("yaml", &b"a: b: c\n"[..], "YAML"),
        ("dotenv", &b"NOEQUALS\n"[..], "KEY=value"),
        ("toml", &b"a = 1\n"[..], "expected yaml"),
    ] {
        let args = ["import", "--format", format, "app:/bad"];
        let out = ts.run(&args, doc);
        let line = assert_fails(&out, &args, 2);
        assert!(line.contains(what), "{format}: {line}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("p@ss"));
    }
    let ls = ts.ok_text(&["ls", "app"]);
    assert!(!ls.contains("bad"), "{ls}");
}
