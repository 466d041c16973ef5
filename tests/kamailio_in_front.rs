//! Kamailio (Debian's 5.6) as the proxy in front of callbackd, with the configuration from
//! docs/integrations/kamailio.cfg: a SIPp caller whose Contact names a private address calls
//! Kamailio, which record-routes, rewrites the Contact and relays to callbackd. The caller
//! completes the keypad flow (a pause), its keys heard over RTP that goes straight between
//! the two, and callbackd's goodbye (BYE) comes back through Kamailio by the Route set.

mod common;

use common::{
    create_callback, free_port, keypad_scenario, run_sipp, show_callback, Kamailio, Server,
};

#[test]
fn the_keypad_flow_works_through_kamailio_and_the_bye_follows_the_route_set() {
    let dir =
        std::env::temp_dir().join(format!("callbackd-kamailio-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = store::testing::sqlite_url();
    let config = common::config_with(&url, &[]);
    let server = Server::start(&config);
    let port = free_port();
    let _kamailio = Kamailio::start(
        &dir,
        "docs/integrations/kamailio.cfg",
        port,
        &[(
            "\"CALLBACKD\"",
            format!("\"sip:{}\"", server.sip_udp.unwrap()),
        )],
    );

    let number = "+12125550101";
    let id = create_callback(&config, number);
    let scenario = dir.join("caller.xml");
    keypad_scenario(number, "5000", &format!("{id}#5*"), false, &scenario);
    // A caller whose Contact names a private address: Kamailio puts in its real one.
    let text = std::fs::read_to_string(&scenario).unwrap().replace(
        "Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>",
        "Contact: <sip:sipp@10.255.255.1:5999>",
    );
    assert!(
        text.contains("10.255.255.1"),
        "the template's Contact changed"
    );
    std::fs::write(&scenario, text).unwrap();
    let trace = dir.join("messages.log");
    let target = format!("127.0.0.1:{port}").parse().unwrap();
    let (ok, failed, out) = run_sipp(
        target,
        &scenario.display().to_string(),
        1,
        &["-trace_msg", "-message_file", &trace.display().to_string()],
    );
    assert_eq!((ok, failed), (1, 0), "{out}");
    assert_eq!(show_callback(&config, &id)["state"], "paused");

    let messages = std::fs::read_to_string(&trace).unwrap();
    let received: Vec<&str> = messages
        .split("-----------------------------------------------")
        .filter(|m| m.contains("message received"))
        .collect();
    let ok = received
        .iter()
        .find(|m| m.contains("SIP/2.0 200 OK") && m.contains("INVITE"))
        .expect("the 200 for the INVITE");
    assert!(
        ok.contains(&format!("Record-Route: <sip:127.0.0.1:{port};lr")),
        "Kamailio record-routed: {ok}"
    );
    let bye = received
        .iter()
        .find(|m| m.contains("BYE sip:"))
        .expect("callbackd's BYE");
    let top_via = bye
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap_or_default();
    assert!(
        top_via.contains(&format!("127.0.0.1:{port}")),
        "the BYE came through Kamailio: {bye}"
    );
    assert!(
        bye.contains("BYE sip:sipp@127.0.0.1:"),
        "to the Contact Kamailio rewrote, not the private one: {bye}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
