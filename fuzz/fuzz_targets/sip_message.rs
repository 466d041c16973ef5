//! Any bytes through the SIP parser, stream framing and the user agent server's checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::message::Method;
use sip::validate::{answer_invalid, check_request, Capabilities};

fuzz_target!(|data: &[u8]| {
    let _ = sip::parse::frame(data);
    match sip::parse::parse_datagram(data) {
        Ok(message) => {
            let caps = Capabilities { methods: vec![Method::Invite, Method::Options, Method::Register], extensions: vec![] };
            let _ = check_request(&message, &caps);
            let _ = sip::parse::parse_datagram(&message.to_bytes());
        }
        Err(invalid) => {
            let _ = answer_invalid(&invalid, "tag");
        }
    }
});
