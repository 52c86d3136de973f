//! `Inventory::parse` on arbitrary UTF-8: never panics, errors name
//! `inventory <file>:<line>:<column>` (1-based), and `resolve` merges a
//! host's settings over the defaults.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use swapcfg::inventory::Inventory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("inv.yaml");
    match Inventory::parse(path, text) {
        Err(e) => {
            let rest = e
                .strip_prefix("inventory inv.yaml:")
                .unwrap_or_else(|| panic!("error does not name the file: {e}"));
            let mut parts = rest.splitn(3, ':');
            let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
            let col: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            assert!(line >= 1 && col >= 1, "error without line:column: {e}");
        }
        Ok(inv) => {
            let again = Inventory::parse(path, text).expect("parse is deterministic");
            assert_eq!(inv.defaults, again.defaults);
            assert_eq!(inv.hosts, again.hosts);
            for (name, h) in &inv.hosts {
                let r = inv.resolve(name);
                assert_eq!(
                    r.address,
                    h.address
                        .clone()
                        .or_else(|| inv.defaults.address.clone())
                        .or(Some(name.clone()))
                );
                assert_eq!(r.port, h.port.or(inv.defaults.port));
                assert_eq!(r.user, h.user.clone().or_else(|| inv.defaults.user.clone()));
                assert_eq!(r.mode, h.mode.or(inv.defaults.mode));
                assert_eq!(
                    r.config_path,
                    h.config_path
                        .clone()
                        .or_else(|| inv.defaults.config_path.clone())
                );
            }
            let unknown = inv.resolve("bob@no-such-host:22");
            if !inv.hosts.contains_key("bob@no-such-host:22") {
                assert_eq!(unknown.address.as_deref(), Some("bob@no-such-host:22"));
                assert_eq!(unknown.port, inv.defaults.port);
            }
        }
    }
});
