//! Booking abuse through the chat (issue 17, finding 12): one conversation booking callback
//! after callback to one stranger's number, and one address booking to many numbers. A number
//! keeps one open callback per queue, and bookings are limited per source and per number.

mod common;

use common::{chat_say, chat_start, config_with, Server};

fn server() -> Server {
    let url = store::testing::sqlite_url();
    Server::start(&config_with(
        &url,
        &[
            ("\nenabled = true", "\nenabled = false"),
            // Many messages from this one address: only the booking limits are in play.
            ("messages_per_minute = 30", "messages_per_minute = 100000"),
        ],
    ))
}

/// Asks conversation `chat` for a callback to `number` as soon as possible; the bot's answer.
fn book(server: &Server, chat: &str, number: &str) -> String {
    let offer = chat_say(server, chat, "I was charged twice for the same month");
    assert!(
        offer.ends_with("Would you like us to call you back?"),
        "{offer}"
    );
    chat_say(server, chat, "yes");
    chat_say(server, chat, number);
    chat_say(server, chat, "as soon as possible")
}

fn callbacks_to(server: &Server, number: &str) -> usize {
    server.get("/api/v1/callbacks?limit=1000").body["callbacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["address"] == number)
        .count()
}

// Regression: one chat session booked 100 callbacks to one stranger's number in 0.3 s, all
// queued, each to be dialed up to three times.
#[test]
fn one_number_gets_one_open_callback_however_often_it_is_booked() {
    let server = server();
    let chat = chat_start(&server);
    let first = book(&server, &chat, "+1 212 555 0100");
    assert!(first.contains("confirmation number is"), "{first}");
    // A refused booking asks for the number again: the conversation goes on giving it.
    let mut again = book(&server, &chat, "+1 212 555 0100");
    for _ in 0..20 {
        assert!(
            again.contains("a callback to this number is booked already")
                || again.contains("we cannot do that right now"),
            "{again}"
        );
        assert!(
            !again.contains("confirmation number is"),
            "no new callback, and not the first one's number either: {again}"
        );
        assert!(again.contains("What number should we call?"), "{again}");
        chat_say(&server, &chat, "+1 212 555 0100");
        again = chat_say(&server, &chat, "as soon as possible");
    }
    assert_eq!(callbacks_to(&server, "+12125550100"), 1);
}

#[test]
fn one_address_books_only_so_many_numbers_an_hour() {
    let server = server();
    let mut booked = 0;
    for i in 0..8 {
        let chat = chat_start(&server);
        let answer = book(&server, &chat, &format!("+1 212 555 01{i:02}"));
        if answer.contains("confirmation number is") {
            booked += 1;
        } else {
            assert!(answer.contains("we cannot do that right now"), "{answer}");
        }
    }
    assert_eq!(booked, 5, "limits.bookings_per_source_per_hour");
    let listed = server.get("/api/v1/callbacks?limit=1000").body;
    assert_eq!(listed["callbacks"].as_array().map(Vec::len), Some(5));
}
