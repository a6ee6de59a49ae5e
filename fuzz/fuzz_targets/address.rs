//! `VAULT:/PATH` addresses from the command line and the serve config: no panic on any input,
//! and whatever parses prints back to an address that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaultfs_store::Address;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(addr) = Address::parse(text) {
        let again = Address::parse(&addr.to_string()).expect("a printed address parses");
        assert_eq!(again, addr);
        for name in addr.path.components() {
            vaultfs_store::validate_name(name).expect("parsed names are valid");
        }
    }
    let _ = Address::parse_entry(text);
});
