//! `vaultfs completions SHELL` and `vaultfs man`: generated from the real command line.

use crate::common::{contains, require_tool, TestStore};

#[test]
fn completions_are_valid_scripts_for_each_shell() {
    let ts = TestStore::new();
    let bash = ts.ok(&["completions", "bash"]);
    assert!(contains(&bash, b"_vaultfs()") && contains(&bash, b"complete -F _vaultfs"));
    // Every subcommand is offered.
    for cmd in [
        "mount",
        "umount",
        "vault",
        "key",
        "acl",
        "env",
        "completions",
        "man",
    ] {
        assert!(
            contains(&bash, cmd.as_bytes()),
            "bash completion lacks {cmd}"
        );
    }
    assert!(require_tool("bash"));
    let script = ts.path("vaultfs.bash");
    std::fs::write(&script, &bash).unwrap();
    // Sourced into a shell, it registers the completion function.
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!(". '{}' && complete -p vaultfs", script.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && contains(&out.stdout, b"_vaultfs"),
        "{out:?}"
    );

    let zsh = ts.ok(&["completions", "zsh"]);
    assert!(zsh.starts_with(b"#compdef vaultfs"), "zsh");
    let fish = ts.ok(&["completions", "fish"]);
    assert!(contains(&fish, b"complete -c vaultfs"), "fish");
    // clap's own usage error, listing the shells.
    let out = ts.run(&["completions", "tcsh"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(contains(&out.stderr, b"tcsh") && contains(&out.stderr, b"fish"));
}

#[test]
fn man_pages_render_for_vaultfs_and_each_command() {
    let ts = TestStore::new();
    let page = String::from_utf8(ts.ok(&["man"])).unwrap();
    assert!(page.contains(".TH vaultfs 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "man page lacks {section}");
    }
    let mount = String::from_utf8(ts.ok(&["man", "mount"])).unwrap();
    assert!(mount.contains(".TH vaultfs-mount 1"), "{mount}");
    assert!(mount.contains("foreground"), "{mount}");
    let line = ts.fails(&["man", "nosuch"], 2);
    assert!(line.contains("nosuch"), "{line}");
}

/// The config keys `src/config.rs` accepts: the fields of `ServeConfig`, `MountConfig` and
/// its action tables (`mounts` is spelled `mount` in the file, `on_change` `mount.on_change`).
fn config_keys() -> Vec<String> {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config.rs"),
    )
    .unwrap();
    let mut keys = Vec::new();
    for name in [
        "struct ServeConfig {",
        "struct MountConfig {",
        "struct OnChangeConfig {",
        "struct SignalConfig {",
    ] {
        let body = &src[src.find(name).expect(name)..];
        let body = &body[..body.find("\n}").unwrap()];
        for line in body.lines().skip(1) {
            let line = line.trim();
            if line.starts_with("//") || line.starts_with('#') {
                continue;
            }
            if let Some((field, _)) = line.split_once(':') {
                keys.push(
                    match field {
                        "mounts" => "mount",
                        "on_change" => "mount.on_change",
                        other => other,
                    }
                    .to_owned(),
                );
            }
        }
    }
    keys
}

#[test]
fn serve_help_documents_every_config_key_with_an_example_that_checks() {
    let ts = TestStore::new();
    let help = ts.ok_text(&["serve", "--help"]);
    let keys = config_keys();
    assert!(keys.contains(&"read_only".to_owned()), "{keys:?}");
    for key in &keys {
        assert!(
            help.contains(&format!("{key} = "))
                || help.contains(&format!("[[{key}]]"))
                || help.contains(&format!("[{key}]")),
            "serve --help does not document {key}:\n{help}"
        );
    }
    // The example config, as printed, passes `serve --check`.
    let example: String = help
        .split("Example config")
        .nth(1)
        .expect("an example config")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert!(example.contains("[[mount]]"), "{example}");
    let file = ts.path("serve.toml");
    std::fs::write(&file, &example).unwrap();
    let args = ["serve", "--check", "--config", file.to_str().unwrap()];
    let out = ts.run(&args, b"");
    crate::common::assert_success(&out, &args);
    assert!(contains(&out.stderr, b"ok (2 mount(s)"), "{out:?}");

    // So does the on-change example (its unit names are examples: not asked of systemd).
    let actions: String = help
        .split("Example on-change actions")
        .nth(1)
        .expect("an on-change example")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    std::fs::write(&file, &actions).unwrap();
    let offline = [
        "serve",
        "--check",
        "--offline",
        "--config",
        file.to_str().unwrap(),
    ];
    let out = ts.run(&offline, b"");
    crate::common::assert_success(&out, &offline);
    assert!(
        contains(&out.stderr, b"ok (1 mount(s), 3 on-change action(s)"),
        "{out:?}"
    );
}

#[test]
fn store_options_appear_only_on_commands_that_open_the_store() {
    let ts = TestStore::new();
    for cmd in [
        &["keygen"][..],
        &["demo"],
        &["umount"],
        &["completions"],
        &["man"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = ts.ok_text(&args);
        for opt in ["--store", "--key-file", "--passphrase-file"] {
            assert!(!help.contains(opt), "`{}` offers {opt}", args.join(" "));
        }
    }
    for cmd in [
        &["ls"][..],
        &["key", "list"],
        &["mount"],
        &["serve"],
        &["vault", "create"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = ts.ok_text(&args);
        for opt in ["--store", "--key-file", "--passphrase-file"] {
            assert!(help.contains(opt), "`{}` lacks {opt}", args.join(" "));
        }
    }
    // Before the command, after it, or between a group and its command: all the same store.
    ts.vault("v", &[]);
    let store = ts.store.to_str().unwrap();
    let key = ts.key.to_str().unwrap();
    for args in [
        &["--store", store, "--key-file", key, "vault", "list"][..],
        &["vault", "--store", store, "--key-file", key, "list"],
        &["vault", "list", "--store", store, "--key-file", key],
    ] {
        let out = crate::common::run_command(
            ts.cmd()
                .env_remove("VAULTFS_STORE")
                .env_remove("VAULTFS_KEY_FILE")
                .args(args),
            b"",
        );
        crate::common::assert_success(&out, args);
        assert!(contains(&out.stdout, b"v "), "{args:?}");
    }
    // After the command, an option wins over the environment and the top level.
    let elsewhere = ts.path("elsewhere.db");
    let out = ts.run(&["ls", "--store", elsewhere.to_str().unwrap(), "v"], b"");
    assert!(contains(&out.stderr, b"elsewhere.db"), "{out:?}");
    // Where they do not apply, they are refused.
    let out = ts.run(&["keygen", "--store", store, "/nonexistent/k"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
