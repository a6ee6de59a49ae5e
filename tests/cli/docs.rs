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
