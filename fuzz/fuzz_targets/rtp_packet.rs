//! Any bytes as a datagram on an RTP port: sorted by the session, events through the
//! telephone-event receiver; nothing may panic.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use media::rfc4733::Receiver;
use media::rtp::{PayloadTypes, Received, Session};
use rand::{rngs::StdRng, SeedableRng};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let types = PayloadTypes { audio: 0, telephone_event: Some(101) };
    let mut session = Session::new(&mut StdRng::seed_from_u64(0), types, None, now);
    let mut receiver = Receiver::new();
    let from = "127.0.0.1:40000".parse().unwrap();
    for chunk in [data, data] {
        if let Some(Received::Event { ssrc, timestamp, payload }) = session.handle_packet(now, from, chunk) {
            let _ = receiver.handle_packet(now, ssrc, timestamp, payload);
        }
    }
    let _ = session.audio_packet(data, 160);
});
