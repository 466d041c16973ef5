//! The command line: config checking that stops start-up with file, key and reason, and the
//! operators' `callbacks` commands working straight on the store.

mod common;

use common::{callbackd, config};
use serde_json::Value;

fn run(args: &[&str], config: &std::path::Path) -> (i32, String, String) {
    let out = callbackd()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_accepts_the_default_and_names_what_is_wrong() {
    let good = config("sqlite:///tmp/unused.db", "");
    let (code, out, _) = run(&["config", "check"], &good);
    assert_eq!(code, 0);
    assert!(
        out.contains(": ok; API on 127.0.0.1:0, sqlite store, queues: support"),
        "{out}"
    );

    let text = std::fs::read_to_string(&good).unwrap();
    let bad = good.with_extension("bad.toml");
    std::fs::write(
        &bad,
        text.replace(
            "booking_horizon = \"14d\"",
            "booking_horizon = \"two weeks\"",
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["config", "check"], &bad);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{}: queues.support.booking_horizon",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains("line"), "{err}");

    std::fs::write(
        &bad,
        text.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8080\""),
    )
    .unwrap();
    let (code, _, err) = run(&["serve", "--no-auth"], &bad);
    assert_eq!(code, 2, "start-up refuses an open API without a token");
    assert!(
        err.contains("api.listen") && err.contains("--no-auth is for loopback only"),
        "{err}"
    );

    for (from, to, key) in [
        (
            "# url = \"http://127.0.0.1:9000/sms\"",
            "url = \"https://sms.example/hook\"",
            "notifier.url",
        ),
        ("lease = \"30s\"", "lease = \"1s\"", "dialer.lease"),
        (
            "max_failures_per_call = 3",
            "max_failures_per_call = 0",
            "ivr.max_failures_per_call",
        ),
    ] {
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        let (code, _, err) = run(&["config", "check"], &bad);
        assert_eq!(code, 2, "{to}");
        assert!(err.contains(key), "{err}");
    }

    let (code, _, err) = run(
        &["config", "check"],
        std::path::Path::new("/nonexistent/callbackd.toml"),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read /nonexistent/callbackd.toml"),
        "{err}"
    );
}

#[tokio::test]
async fn operators_work_on_callbacks_from_the_command_line() {
    let url = store::testing::sqlite_url();
    let cfg = config(&url, "");
    let (code, out, err) = run(&["migrate"], &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sqlite store is at the current schema"));

    let (code, out, err) = run(
        &[
            "callbacks",
            "create",
            "--queue",
            "support",
            "--address",
            "+1 212 555 0100",
            "--skill",
            "sales",
            "--name",
            "Ada",
        ],
        &cfg,
    );
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["confirmation_id"].as_str().unwrap();

    let (code, out, _) = run(&["callbacks", "modify", id, "pause"], &cfg);
    assert_eq!(code, 0);
    let modified: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(modified["callback"]["state"], "paused");
    assert_eq!(modified["receipt"]["outcome"], "success");

    let (code, out, err) = run(
        &["callbacks", "modify", id, "change-address", "+19005550100"],
        &cfg,
    );
    assert_eq!(code, 1, "a refusal exits non-zero");
    assert!(
        err.contains("refused: premium-rate numbers may not be called"),
        "{err}"
    );
    let refused: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(refused["receipt"]["outcome"], "blocked_by_policy");

    let (code, _, err) = run(&["callbacks", "modify", id, "teleport"], &cfg);
    assert_eq!(code, 1);
    assert!(
        err.contains("`teleport` with 0 argument(s) is not a modification"),
        "{err}"
    );
    let (code, _, err) = run(&["callbacks", "show", "12345678"], &cfg);
    assert_eq!(code, 1);
    assert!(err.contains("is not a confirmation ID"), "{err}");

    let (code, out, _) = run(&["callbacks", "show", id], &cfg);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "pause", "change_address"]);
    assert_eq!(shown["history"][1]["channel"], "cli");

    let (code, out, _) = run(&["callbacks", "list", "--state", "paused"], &cfg);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    store::testing::discard(&url).await;
}

#[test]
fn relative_paths_in_a_configuration_are_taken_from_its_folder() {
    // A deployment folder holding its configuration, dialplan, prompts and store, used from
    // another working folder.
    let dir = std::env::temp_dir().join(format!("callbackd-etc-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(dir.join("sounds")).unwrap();
    for entry in std::fs::read_dir("prompts").unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("sounds").join(entry.file_name())).unwrap();
    }
    std::fs::copy("dialplans/default.toml", dir.join("plan.toml")).unwrap();
    let text = std::fs::read_to_string("callbackd.toml")
        .unwrap()
        .replace(
            "dialplan = \"dialplans/default.toml\"",
            "dialplan = \"plan.toml\"",
        )
        .replace("prompts = \"prompts\"", "prompts = \"sounds\"")
        .replace("sqlite://callbackd.db", "sqlite://state.db");
    std::fs::write(dir.join("callbackd.toml"), text).unwrap();
    let out = callbackd()
        .current_dir("/")
        .args(["dialplan", "check"])
        .arg(dir.join("plan.toml"))
        .env("CALLBACKD_CONFIG", dir.join("callbackd.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the prompts were found beside the configuration: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = callbackd()
        .current_dir("/")
        .args(["callbacks", "list"])
        .env("CALLBACKD_CONFIG", dir.join("callbackd.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.join("state.db").exists(),
        "the SQLite store is made beside the configuration"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn secrets_come_from_files_named_by_file_keys() {
    let dir =
        std::env::temp_dir().join(format!("callbackd-secrets-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = "a-token-from-a-file-0123";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let store = dir.join("secret.db");
    std::fs::write(
        dir.join("store-url"),
        format!("sqlite://{}\n", store.display()),
    )
    .unwrap();
    // The token's file is named relatively: it is taken from the configuration's folder.
    let written = common::config_with(
        &store::testing::sqlite_url(),
        &[
            (
                "# token = \"a long random string\"",
                "token_file = \"token\"",
            ),
            ("\n[store]\n", "\n[store]\nurl_file = \"store-url\"\n"),
        ],
    );
    let text = std::fs::read_to_string(written).unwrap();
    let path = dir.join("callbackd.toml");
    std::fs::write(&path, &text).unwrap();
    let server = common::Server::start_without_token(&path);
    assert!(store.exists(), "the store is the one the file names");
    let ask = |bearer: &str| {
        common::request(
            server.addr,
            "GET",
            "/api/v1/queues",
            &[("Authorization", &format!("Bearer {bearer}"))],
            None,
        )
        .unwrap()
        .status
    };
    assert_eq!(
        ask(token),
        200,
        "the token is the file's, less its line break"
    );
    assert_eq!(ask("another-token-0123456789"), 401);
    drop(server);

    // Both ways at once is a mistake, said as such.
    std::fs::write(
        &path,
        text.replace(
            "token_file = \"token\"",
            "token_file = \"token\"\ntoken = \"0123456789abcdef\"",
        ),
    )
    .unwrap();
    let out = callbackd()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.token: give `api.token` or `api.token_file`, not both"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn settings_come_from_the_environment_and_a_wrong_one_is_named() {
    let path = config("sqlite:///tmp/unused.db", "");
    let check = |name: &str, value: &str| {
        let out = callbackd()
            .args(["config", "check", "--config"])
            .arg(&path)
            .env(name, value)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = check("CALLBACKD_API__LISTEN", "\"127.0.0.1:18181\"");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("API on 127.0.0.1:18181"), "{out}");
    let (code, out) = check("CALLBACKD_SIP__MAX_CALLS", "lots");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("sip.max_calls") && out.contains("CALLBACKD_SIP__MAX_CALLS"),
        "{out}"
    );
}

#[test]
fn start_up_stops_on_a_bad_dialplan_or_bots_file_with_its_line() {
    let dir = std::env::temp_dir().join(format!("callbackd-bad-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let dialplan = dir.join("dialplan.toml");
    std::fs::write(
        &dialplan,
        std::fs::read_to_string("dialplans/default.toml")
            .unwrap()
            .replacen("next = \"", "next = \"nowhere-", 1),
    )
    .unwrap();
    let bots = dir.join("bots.toml");
    std::fs::write(
        &bots,
        std::fs::read_to_string("chatbots/default.toml")
            .unwrap()
            .replace("skill = \"technical\"", "skill = \"plumbing\""),
    )
    .unwrap();
    let good = config(&store::testing::sqlite_url(), "");
    let text = std::fs::read_to_string(&good).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    for (from, to, problem) in [
        (
            format!("dialplan = \"{root}/dialplans/default.toml\""),
            format!("dialplan = \"{}\"", dialplan.display()),
            format!("{}:", dialplan.display()),
        ),
        (
            format!("bots = \"{root}/chatbots/default.toml\""),
            format!("bots = \"{}\"", bots.display()),
            format!("{}:", bots.display()),
        ),
    ] {
        let bad = dir.join("callbackd.toml");
        assert!(text.contains(&from), "{from}");
        std::fs::write(&bad, text.replace(&from, &to)).unwrap();
        // It must stop by itself; one that serves is killed, and the test fails.
        let mut child = callbackd()
            .args(["serve", "--config"])
            .arg(&bad)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > std::time::Duration::from_secs(20) {
                child.kill().ok();
                panic!("callbackd served with {to}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{to}: {err}");
        // file:line:column, then what is wrong.
        let line = err
            .lines()
            .find(|l| l.contains(&problem))
            .unwrap_or_else(|| panic!("{to}: {err}"));
        let place: Vec<&str> = line[line.find(&problem).unwrap() + problem.len()..]
            .splitn(3, ':')
            .collect();
        assert!(
            place.len() == 3 && place[..2].iter().all(|n| n.parse::<u32>().is_ok()),
            "{line}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
