//! Any bytes as a datagram to the user agent core, which must answer or drop, never panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rand::{rngs::StdRng, SeedableRng};
use sip::ua::{Config, Link, UserAgent};

fuzz_target!(|data: &[u8]| {
    let config = Config {
        timers: Default::default(),
        advertised: sip::advertise::Advertise::new(
            sip::advertise::Told {
                host: "127.0.0.1".into(),
                port: None,
            },
            5060,
            5060,
        ),
        product: "fuzz".into(),
        max_calls: 10,
        max_calls_per_second: 10,
        trusted: vec![],
        per_source: Default::default(),
        registrar: None,
        registrations: Vec::new(),
    };
    let mut ua = UserAgent::new(config, Box::new(StdRng::seed_from_u64(0)));
    let now = Instant::now();
    let source = "127.0.0.1:5070".parse().unwrap();
    // The same bytes twice (a retransmission), then time passing.
    ua.handle_message(now, source, Link::Udp, data);
    ua.handle_message(now, source, Link::Tcp, data);
    ua.handle_timeout(now + Duration::from_secs(40));
    while ua.poll_output().is_some() {}
});
