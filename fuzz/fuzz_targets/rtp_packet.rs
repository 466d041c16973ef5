//! Any bytes as datagrams on an RTP port: sorted by the call leg's session, telephone-events
//! through the receiver, audio through the tone detector and into a bridge's relay; nothing
//! may panic.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use media::g711::Law;
use media::leg::Leg;
use media::rtp::{Learn, PayloadTypes, Session};
use rand::{rngs::StdRng, SeedableRng};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let types = PayloadTypes { audio: 0, telephone_event: Some(101) };
    let session = Session::new(
        &mut StdRng::seed_from_u64(0),
        types,
        None,
        Learn::FromAnywhere,
        now,
    );
    let mut leg = Leg::new(session, Law::Mu);
    leg.set_bridged(true);
    let from = "127.0.0.1:40000".parse().unwrap();
    // The source is learned first, with the SSRC the fuzzed bytes carry (four audio packets in
    // sequence), so what they say goes past probation into the leg.
    let ssrc = data.get(8..12).unwrap_or(&[0; 4]);
    for seq in 0..4u8 {
        let mut packet = vec![0x80, 0, 0xff, seq, 0, 0, 0, seq];
        packet.extend_from_slice(ssrc);
        packet.extend([0xff; 160]);
        leg.handle_packet(now, from, &packet);
    }
    let half = data.len() / 2;
    for chunk in [data, &data[..half], &data[half..], data] {
        if let Some(audio) = leg.handle_packet(now, from, chunk).map(<[u8]>::to_vec) {
            leg.relay(Law::A, &audio);
        }
        leg.tick(&mut |_| {});
    }
    while leg.poll_event().is_some() {}
});
