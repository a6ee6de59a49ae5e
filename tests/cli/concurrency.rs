//! Several `vaultfs` processes writing at once: every write succeeds and none is lost.

use crate::common::TestStore;

#[test]
fn writers_lose_nothing() {
    const WRITERS: usize = 6;
    const WRITES: usize = 15;
    let ts = TestStore::new();
    ts.vault("v", &[]);
    let value = |i: usize, j: usize| format!("value of w{i}-{j}").into_bytes();
    let barrier = std::sync::Barrier::new(WRITERS);
    std::thread::scope(|s| {
        for i in 0..WRITERS {
            let (ts, barrier) = (&ts, &barrier);
            s.spawn(move || {
                barrier.wait();
                for j in 0..WRITES {
                    ts.write(&format!("v:/w{i}-{j}"), &value(i, j));
                }
            });
        }
    });
    for i in 0..WRITERS {
        for j in 0..WRITES {
            assert_eq!(ts.cat(&format!("v:/w{i}-{j}")), value(i, j));
        }
    }
    assert_eq!(ts.ok_text(&["ls", "v"]).lines().count(), WRITERS * WRITES);

    // All at one secret: every write succeeds and the survivor is one whole value.
    let barrier = std::sync::Barrier::new(WRITERS);
    std::thread::scope(|s| {
        for i in 0..WRITERS {
            let (ts, barrier) = (&ts, &barrier);
            s.spawn(move || {
                barrier.wait();
                for j in 0..3 {
                    ts.write("v:/shared", &value(i, j));
                }
            });
        }
    });
    let last = ts.cat("v:/shared");
    assert!(
        (0..WRITERS).any(|i| last == value(i, 2)),
        "{:?}",
        String::from_utf8_lossy(&last)
    );
}

#[test]
fn mkdir_and_write_into_one_new_directory() {
    const PROCS: usize = 6;
    let ts = TestStore::new();
    ts.vault("v", &[]);
    for round in 0..3 {
        let barrier = std::sync::Barrier::new(PROCS);
        std::thread::scope(|s| {
            for i in 0..PROCS {
                let (ts, barrier) = (&ts, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    // Half create the directory first; the others let `write` create it.
                    if i % 2 == 0 {
                        ts.ok(&["mkdir", "-p", &format!("v:/r{round}/new/dir")]);
                    }
                    ts.write(
                        &format!("v:/r{round}/new/dir/s{i}"),
                        format!("{i}").as_bytes(),
                    );
                });
            }
        });
        let listing = ts.ok_text(&["ls", &format!("v:/r{round}/new/dir")]);
        let expected: String = (0..PROCS).map(|i| format!("s{i}\n")).collect();
        assert_eq!(listing, expected, "round {round}");
        assert_eq!(ts.ok_text(&["ls", &format!("v:/r{round}")]), "new/\n");
        for i in 0..PROCS {
            assert_eq!(
                ts.cat(&format!("v:/r{round}/new/dir/s{i}")),
                format!("{i}").as_bytes()
            );
        }
    }
    let rounds: String = (0..3).map(|r| format!("r{r}/\n")).collect();
    assert_eq!(ts.ok_text(&["ls", "v"]), rounds, "one directory per name");
}
