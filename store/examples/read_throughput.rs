//! Measures `SealedValue::read` and whole-value reads for 1, 4 and 16 MiB secrets:
//! `cargo run --release -p vaultfs-store --example read_throughput`.

use std::time::Instant;

use vaultfs_store::{Address, Credential, KdfParams, SecretBytes, Store, VaultAcl};

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let cred = Credential::KeyFile(SecretBytes::new(vec![7; 32]));
    let mut store = Store::create(&path, &cred, KdfParams::default()).expect("create");
    let acl = VaultAcl {
        owner: "root".into(),
        group: "root".into(),
        mode: 0o400,
    };
    store.create_vault("b", acl).expect("vault");
    for mib in [1usize, 4, 16] {
        let len = mib << 20;
        let value: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let addr = Address::parse(&format!("b:/v{mib}")).expect("address");
        let entry = store.write(&addr, &value).expect("write");
        let reader = store.reader("b").expect("reader");
        let sealed = reader
            .sealed_value(entry.id, entry.version)
            .expect("sealed")
            .expect("present");
        let mbps = |secs: f64, bytes: usize| bytes as f64 / secs / (1 << 20) as f64;
        // Whole value, as `cat` does.
        let t = Instant::now();
        let whole = store.read(&addr).expect("read");
        let cat = t.elapsed().as_secs_f64();
        assert_eq!(whole.len(), len);
        // 128 KiB reads in order, as the kernel sends them through a mount.
        let t = Instant::now();
        let mut off = 0u64;
        while off < len as u64 {
            let got = sealed.read(off, 128 << 10).expect("chunk read");
            off += got.len() as u64;
        }
        let seq = t.elapsed().as_secs_f64();
        // One 4 KiB read in the middle.
        let t = Instant::now();
        let small = sealed.read(len as u64 / 2, 4096).expect("small read");
        let one = t.elapsed().as_secs_f64();
        assert_eq!(small.len(), 4096);
        println!(
            "{mib:>2} MiB: Store::read (fetch + decrypt all) {:.0} MB/s; SealedValue::read 128 KiB sequential {:.0} MB/s; one 4 KiB read {:.0} us",
            mbps(cat, len),
            mbps(seq, len),
            one * 1e6
        );
    }
}
