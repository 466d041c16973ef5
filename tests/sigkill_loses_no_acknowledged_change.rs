//! Killing callbackd with SIGKILL in the middle of a burst of modifications loses no change it
//! acknowledged: every receipt a client received is in the history after a restart, and the
//! stored version counts exactly the changes that committed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use callbacks::{CallbackStore, ConfirmationId, Outcome};
use common::{config, store_url, Server};
use serde_json::json;

const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    kill_mid_burst("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    kill_mid_burst("postgres").await;
}

/// What one client saw acknowledged: receipts in order, and the version after each.
struct Acked {
    id: String,
    receipts: Vec<String>,
}

async fn kill_mid_burst(backend: &str) {
    let url = store_url(backend).await;
    let mut server = Server::start(&config(&url, ""));
    let addr = server.addr;
    let token = server.token.clone();
    let ids: Vec<String> = (0..CLIENTS)
        .map(|i| {
            let r = server.post(
                "/api/v1/callbacks",
                &json!({"queue": "support", "address": format!("+1212555{i:04}")}),
            );
            assert_eq!(r.status, 201);
            r.body["confirmation_id"].as_str().unwrap().to_owned()
        })
        .collect();

    let enough = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let (enough, token) = (enough.clone(), token.clone());
            std::thread::spawn(move || {
                let mut acked = Acked {
                    id,
                    receipts: Vec::new(),
                };
                for n in 0.. {
                    let action = if n % 2 == 0 { "pause" } else { "resume" };
                    let path = format!("/api/v1/callbacks/{}/modifications", acked.id);
                    let body = json!({"action": action}).to_string();
                    let bearer = format!("Bearer {token}");
                    match common::request(
                        addr,
                        "POST",
                        &path,
                        &[("Authorization", &bearer)],
                        Some(&body),
                    ) {
                        Ok(r) if r.status == 200 => {
                            acked
                                .receipts
                                .push(r.body["receipt"]["code"].as_str().unwrap().to_owned());
                            if acked.receipts.len() >= 20 {
                                enough.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(r) => panic!("unexpected answer mid-burst: {} {:?}", r.status, r.body),
                        // The server is gone: this request may or may not have committed.
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();

    while !enough.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.child.kill().expect("SIGKILL"); // std's kill sends SIGKILL on Unix
    server.child.wait().unwrap();
    let acked: Vec<Acked> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(
        acked.iter().map(|a| a.receipts.len()).sum::<usize>() >= 20,
        "the burst was under way"
    );

    // Restart on the same store: it opens cleanly, and everything acknowledged is there.
    let restarted = Server::start(&config(&url, ""));
    assert_eq!(restarted.get("/healthz").status, 200);
    drop(restarted);
    let store = store::Store::open(&url).await.unwrap();
    for client in &acked {
        let callback = store
            .find(&ConfirmationId::parse(&client.id).unwrap())
            .await
            .unwrap()
            .unwrap();
        let history = store.history(callback.id).await.unwrap();
        let committed: Vec<String> = history
            .iter()
            .filter(|e| e.action != "created" && e.outcome == Outcome::Success)
            .map(|e| e.receipt.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(
            committed[..client.receipts.len()],
            client.receipts[..],
            "every acknowledged change of {} is stored, in order",
            client.id
        );
        assert!(
            committed.len() <= client.receipts.len() + 1,
            "at most the one unanswered request committed"
        );
        assert_eq!(
            callback.version,
            1 + committed.len() as i64,
            "the version counts exactly the committed changes"
        );
        let expected_state = if committed.len() % 2 == 1 {
            "paused"
        } else {
            "queued"
        };
        assert_eq!(callback.state.as_str(), expected_state);
    }
    store.close().await;
    store::testing::discard(&url).await;
}
