//! Open handles under attack (security round 2): a handle reads exactly the version it opened,
//! never a value its opener was not allowed to open, and never a mix of two versions; an mmap
//! never faults because another value was written. Each case is reproduced deterministically:
//! open, read part, change the store, read the rest.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::common::TestStore;
use crate::mounts::{can_mount, user, within};

/// A process that holds files open and reads them on command, as `user` (or as root): the
/// way to keep a descriptor open across a change made by the test.
const HOLDER: &str = r#"
import mmap, os, sys
fds = {}
maps = {}
def answer(s):
    sys.stdout.write(s + "\n"); sys.stdout.flush()
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    try:
        if cmd == "open":
            fds[0] = os.open(arg, os.O_RDONLY); answer("ok")
        elif cmd == "read":
            answer("ok " + os.read(fds[0], int(arg)).hex())
        elif cmd == "rest":
            out = b""
            while True:
                b = os.read(fds[0], 1 if arg == "1" else 1 << 20)
                if not b: break
                out += b
            answer("ok " + out.hex())
        elif cmd == "size":
            answer("ok " + str(os.fstat(fds[0]).st_size).encode().hex())
        elif cmd == "mmap":
            maps[0] = mmap.mmap(fds[0], os.fstat(fds[0]).st_size, prot=mmap.PROT_READ)
            answer("ok")
        elif cmd == "touch":
            answer("ok " + maps[0][:].hex())
    except OSError as e:
        answer("err " + (os.strerror(e.errno) if e.errno else str(e)))
"#;

struct Holder {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Holder {
    fn spawn(user: Option<&str>) -> Holder {
        let mut cmd = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", "python3", "-c", HOLDER]);
                c
            }
            None => {
                let mut c = Command::new("python3");
                c.args(["-c", HOLDER]);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (installed by .ci/run)");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Holder {
            child,
            input,
            output,
        }
    }

    /// Sends one command; `Ok(bytes)` or `Err(strerror)`. Bounded: a hung read fails the test.
    fn ask(&mut self, line: &str) -> Result<Vec<u8>, String> {
        writeln!(self.input, "{line}").unwrap();
        let mut answer = String::new();
        let n = self.output.read_line(&mut answer).unwrap();
        if n == 0 {
            let status = self.child.wait().unwrap();
            return Err(format!("holder died: {status:?}"));
        }
        let answer = answer.trim_end();
        match answer.split_once(' ').unwrap_or((answer, "")) {
            ("ok", hex) => Ok(from_hex(hex)),
            ("err", e) => Err(e.to_owned()),
            _ => panic!("holder said {answer:?}"),
        }
    }

    fn open(&mut self, path: &Path) {
        self.ask(&format!("open {}", path.display()))
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn size_of(h: &mut Holder) -> u64 {
    let raw = h.ask("size").unwrap();
    String::from_utf8(raw).unwrap().parse().unwrap()
}

/// A value of `len` bytes that is never a prefix or suffix of another test value.
fn value(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_add((i % 251) as u8))
        .collect()
}

fn rest_of(h: &mut Holder, one_byte_at_a_time: bool) -> Result<Vec<u8>, String> {
    h.ask(if one_byte_at_a_time { "rest 1" } else { "rest" })
}

#[test]
fn a_single_secret_handle_never_reads_a_root_only_replacement() {
    if !can_mount() {
        return;
    }
    user("vfs-h-bob", None);
    for replace_by in ["rm-and-write", "mv"] {
        let ts = TestStore::new();
        ts.vault("svc", &["--owner", "root", "--mode", "0400"]);
        ts.write("svc:/tok", b"bob-may-read-this");
        ts.ok(&["acl", "set", "svc:/tok", "--owner", "vfs-h-bob"]);
        ts.write("svc:/other", b"ROOT-ONLY-VALUE");
        let mnt = ts.path("tok");
        let _m = ts.mount("svc:/tok", &mnt);

        let mut bob = Holder::spawn(Some("vfs-h-bob"));
        bob.open(&mnt);
        assert_eq!(bob.ask("read 1").unwrap(), b"b");
        match replace_by {
            "mv" => {
                ts.ok(&["rm", "svc:/tok"]);
                ts.ok(&["mv", "svc:/other", "svc:/tok"]);
            }
            _ => {
                ts.ok(&["rm", "svc:/tok"]);
                ts.write("svc:/tok", b"ROOT-ONLY-VALUE");
            }
        }
        // The next open by root sees the replacement, which bob may not open.
        let root_view = within(Duration::from_secs(5), "root reads the mount", {
            let mnt = mnt.clone();
            move || std::fs::read(mnt).unwrap()
        });
        assert_eq!(root_view, b"ROOT-ONLY-VALUE");
        let rest = rest_of(&mut bob, true);
        if let Ok(bytes) = &rest {
            assert_eq!(
                bytes, b"ob-may-read-this",
                "{replace_by}: bob's old handle read something other than its own version"
            );
        } else {
            assert_eq!(rest, Err("Stale file handle".into()), "{replace_by}");
        }
        let mut again = Holder::spawn(Some("vfs-h-bob"));
        let denied = again.ask(&format!("open {}", mnt.display()));
        assert_eq!(denied, Err("Permission denied".into()), "{replace_by}");
    }
}

#[test]
fn a_handle_keeps_its_version_through_a_move_into_a_private_directory_and_rotations() {
    if !can_mount() {
        return;
    }
    user("vfs-h-bob", None);
    let ts = TestStore::new();
    // Everyone may traverse and list; pub/tok is bob's alone, private/ root's alone.
    ts.vault("app", &["--owner", "root", "--mode", "0444"]);
    ts.ok(&["mkdir", "app:/pub"]);
    ts.ok(&["mkdir", "app:/private"]);
    ts.ok(&["acl", "set", "app:/private", "--mode", "0400"]);
    ts.write("app:/pub/tok", b"v1-for-bob");
    ts.ok(&[
        "acl",
        "set",
        "app:/pub/tok",
        "--owner",
        "vfs-h-bob",
        "--mode",
        "0400",
    ]);
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);

    let mut bob = Holder::spawn(Some("vfs-h-bob"));
    bob.open(&mnt.join("pub/tok"));
    assert_eq!(bob.ask("read 1").unwrap(), b"v");
    ts.ok(&["mv", "app:/pub/tok", "app:/private/tok"]);
    ts.write("app:/private/tok", b"ROTATED-ONE-root-only");
    assert_eq!(
        std::fs::read(mnt.join("private/tok")).unwrap(),
        b"ROTATED-ONE-root-only"
    );
    ts.write("app:/private/tok", b"ROTATED-TWO-root-only");
    assert_eq!(
        std::fs::read(mnt.join("private/tok")).unwrap(),
        b"ROTATED-TWO-root-only"
    );
    assert_eq!(rest_of(&mut bob, true).unwrap(), b"1-for-bob");
    assert_eq!(
        size_of(&mut bob),
        10,
        "fstat shows the version the handle opened"
    );
}

#[test]
fn a_reader_gets_exactly_the_value_current_at_its_open_whatever_rotates_meanwhile() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    let mnt = ts.path("mnt");
    ts.write("app:/s", &value(1, 40));
    let _m = ts.mount("app", &mnt);
    let file = mnt.join("s");
    let sizes = [40usize, 300_000, 7, 131_073, 40];
    for (round, pair) in sizes.windows(2).enumerate() {
        let (old_len, new_len) = (pair[0], pair[1]);
        let old = value(round as u8 * 2 + 1, old_len);
        let new = value(round as u8 * 2 + 2, new_len);
        ts.write("app:/s", &old);
        for one_byte in [true, false] {
            let mut reader = Holder::spawn(None);
            reader.open(&file);
            let first = reader.ask("read 1").unwrap();
            assert_eq!(size_of(&mut reader), old_len as u64);
            ts.write("app:/s", &new);
            let mut got = first;
            got.extend(rest_of(&mut reader, one_byte).unwrap());
            assert_eq!(
                got.len(),
                old_len,
                "{old_len} -> {new_len} bytes, one byte at a time: {one_byte}: torn read"
            );
            assert!(got == old, "{old_len} -> {new_len}: mixed bytes");
            assert_eq!(size_of(&mut reader), old_len as u64);
            // The next open sees the new value and size (a bare stat may show the old
            // inode until the kernel's name cache is dropped, within a second).
            let mut fresh = std::fs::File::open(&file).unwrap();
            assert_eq!(fresh.metadata().unwrap().size(), new_len as u64);
            let mut bytes = Vec::new();
            fresh.read_to_end(&mut bytes).unwrap();
            assert!(bytes == new, "the next open reads the new value");
            ts.write("app:/s", &old);
        }
    }
}

#[test]
fn an_mmap_never_faults_when_a_rotation_shrinks_the_file() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    let big = value(9, 300_000);
    ts.write("app:/s", &big);
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    let mut mapper = Holder::spawn(None);
    mapper.open(&mnt.join("s"));
    mapper.ask("mmap").unwrap();
    ts.write("app:/s", b"short");
    assert_eq!(std::fs::read(mnt.join("s")).unwrap(), b"short");
    // On a shared inode the pages past 5 bytes would now be beyond EOF: SIGBUS.
    let pages = mapper.ask("touch").expect("the mapping faulted");
    assert!(pages == big, "the mapping shows another version");
}

#[test]
fn an_unchanged_secret_keeps_the_page_cache_and_a_changed_one_does_not() {
    if !can_mount() {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &[]);
    ts.write("app:/s", b"one");
    let mnt = ts.path("mnt");
    let _m = ts.mount("app", &mnt);
    let file = mnt.join("s");
    let ino = std::fs::metadata(&file).unwrap().ino();
    assert_eq!(std::fs::read(&file).unwrap(), b"one");
    assert_eq!(
        std::fs::metadata(&file).unwrap().ino(),
        ino,
        "same version, same inode"
    );
    ts.write("app:/s", b"two!");
    let mut read = Vec::new();
    std::fs::File::open(&file)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, b"two!");
    assert_ne!(
        std::fs::metadata(&file).unwrap().ino(),
        ino,
        "a new version is a new inode"
    );
}
