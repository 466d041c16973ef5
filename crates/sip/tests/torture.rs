//! RFC 4475 (SIP torture messages) and RFC 5118 (IPv6 torture messages), byte-exact from
//! `tests/data/sip-torture/`: each gets the treatment the RFC asks of a user agent server.

use std::path::PathBuf;

use sip::header::{CSeq, Via};
use sip::message::{Message, Method, Name};
use sip::parse::parse_datagram;
use sip::validate::{answer_invalid, check_request, Capabilities};

/// What a user agent server does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// Acts on the request (the method's own processing follows).
    Process,
    /// Answers with this status, without acting.
    Reply(u16),
    /// A response: matched to a transaction if it is usable.
    Response,
    /// Dropped without an answer.
    Drop,
}

use Treatment::*;

fn caps() -> Capabilities {
    use Method::*;
    Capabilities {
        methods: vec![Invite, Ack, Bye, Cancel, Options, Info, Update, Register],
        extensions: vec![],
    }
}

fn treat(bytes: &[u8]) -> (Treatment, Option<Message>) {
    match parse_datagram(bytes) {
        Err(invalid) => match answer_invalid(&invalid, "t") {
            Some(answer) => (Reply(answer.code().unwrap()), None),
            None => (Drop, None),
        },
        Ok(m) if !m.is_request() => {
            let usable = m
                .headers
                .get(&Name::CSeq)
                .is_some_and(|c| CSeq::parse(c).is_ok())
                && m.headers
                    .get(&Name::Via)
                    .is_some_and(|v| Via::parse(v).is_ok());
            (if usable { Response } else { Drop }, Some(m))
        }
        Ok(m) => match check_request(&m, &caps()) {
            Ok(_) => (Process, Some(m)),
            Err(refusal) => (Reply(refusal.code), Some(m)),
        },
    }
}

fn corpus(folder: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/sip-torture")
        .join(folder)
}

fn expected_4475(name: &str) -> Treatment {
    match name {
        "wsinv" | "esc01" | "escnull" | "lwsdisp" | "longreq" | "dblreq" | "semiuri"
        | "transports" => Process,
        // MESSAGE is a method this user agent does not take.
        "mpart01" => Reply(405),
        "intmeth" | "esc02" | "mismatch02" => Reply(501),
        "unreason" | "noreason" | "bcast" => Response,
        "badinv01" | "clerr" | "ncl" | "scalar02" | "quotbal" | "ltgtruri" | "lwsruri"
        | "lwsstart" | "trws" | "escruri" | "regbadct" | "badaspec" | "baddn" | "mismatch01"
        | "badbranch" | "insuf" | "unksm2" | "multi01" | "mcl01" => Reply(400),
        // The Date header does not matter to a user agent: process normally.
        "baddate" => Process,
        "badvers" => Reply(505),
        "scalarlg" | "bigcode" => Drop,
        "unkscm" | "novelsc" => Reply(416),
        "bext01" => Reply(420),
        "invut" => Reply(415),
        "sdp01" => Reply(406),
        // Validation passes; the registrar then challenges the unknown scheme.
        "regaut01" | "cparam01" | "cparam02" | "regescrt" => Process,
        // An endpoint processes Max-Forwards: 0 normally.
        "zeromf" => Process,
        "inv2543" => Process,
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn rfc4475_every_message_gets_what_the_rfc_asks() {
    let dir = corpus("rfc4475");
    let expect =
        std::fs::read_to_string(dir.join("EXPECT.tsv")).expect("the corpus is in tests/data");
    let mut failures = Vec::new();
    let mut count = 0;
    for line in expect.lines().skip(1) {
        let name = line.split('\t').next().unwrap();
        let bytes = std::fs::read(dir.join(format!("{name}.dat"))).unwrap();
        let (got, _) = treat(&bytes);
        if got != expected_4475(name) {
            failures.push(format!(
                "{name}: got {got:?}, want {:?}",
                expected_4475(name)
            ));
        }
        count += 1;
    }
    assert_eq!(count, 49);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rfc4475_details() {
    let dir = corpus("rfc4475");
    let read = |name: &str| std::fs::read(dir.join(format!("{name}.dat"))).unwrap();
    // 3.1.1.8: the trailing bytes after a zero-length body are noise.
    let (_, m) = treat(&read("dblreq"));
    let m = m.unwrap();
    assert_eq!(m.method(), Some(&Method::Register));
    assert!(m.body.is_empty());
    // 3.1.1.11: the binary body (NUL, bare CR and LF) is framed by Content-Length.
    let (_, m) = treat(&read("mpart01"));
    assert_eq!(m.unwrap().body.len(), 553);
    // 3.1.1.5: C%6Fntact is not Contact, so there are two contacts, not three.
    let (_, m) = treat(&read("esc02"));
    assert_eq!(m.unwrap().headers.count(&Name::Contact), 2);
    // 3.1.1.1: folded, oddly spaced headers are read right.
    let m = parse_datagram(&read("wsinv")).unwrap();
    let r = check_request(&m, &caps()).unwrap();
    assert_eq!((r.cseq.number, r.max_forwards), (9, Some(68)));
    assert_eq!(r.via.len(), 3);
    assert_eq!(r.to.tag(), Some("1918181833n"));
    assert_eq!(m.body.len(), 150);
    // 3.4.1: an RFC 2543 INVITE without branch, tags, Max-Forwards or Content-Length.
    let m = parse_datagram(&read("inv2543")).unwrap();
    let r = check_request(&m, &caps()).unwrap();
    assert_eq!(
        (r.via[0].branch(), r.from.tag(), r.max_forwards),
        (None, None, None)
    );
    assert!(m.body.starts_with(b"v=0"));
}

/// RFC 5118's files have bare LF line ends and some lack the final empty line or declare a
/// wrong Content-Length; as its SOURCE.md says, a harness converts them to CRLF, closes the
/// header section and recomputes Content-Length.
fn crlf_5118(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    let (head, body) = text
        .split_once("\n\n")
        .unwrap_or((text.trim_end_matches('\n'), ""));
    let body = body.replace('\n', "\r\n");
    let head: Vec<String> = head
        .lines()
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_owned()
            }
        })
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

#[test]
fn rfc5118_every_message_gets_what_the_rfc_asks() {
    let dir = corpus("rfc5118");
    let expect = std::fs::read_to_string(dir.join("EXPECT.tsv")).unwrap();
    let mut failures = Vec::new();
    for line in expect.lines().skip(1) {
        let mut fields = line.split('\t');
        let (name, class) = (fields.next().unwrap(), fields.nth(1).unwrap());
        let bytes = crlf_5118(&std::fs::read(dir.join(format!("{name}.dat"))).unwrap());
        let want = if class == "invalid" {
            Reply(400)
        } else {
            Process
        };
        let (got, _) = treat(&bytes);
        if got != want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
