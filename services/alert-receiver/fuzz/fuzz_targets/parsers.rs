//! Every parser of untrusted receiver input (JSON depth scan, Splunk and Alertmanager bodies,
//! the signature header) on arbitrary bytes: none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    opsmesh_alert_receiver::parse_untrusted(data);
});
