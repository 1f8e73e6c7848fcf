//! Every parser of untrusted receiver input (JSON depth scan, Splunk and Alertmanager bodies,
//! the signature header) on arbitrary bytes, and signature verification at arbitrary clocks
//! and timestamps (`i64::MIN`..`i64::MAX`): none may panic, and a correctly signed header
//! within the replay window must verify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    opsmesh_alert_receiver::parse_untrusted(data);
    opsmesh_alert_receiver::verify_untrusted_signature(data);
});
