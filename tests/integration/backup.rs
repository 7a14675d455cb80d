//! `wayline backup` from a running server under load, `wayline restore` into a new data
//! directory, and the server started on it; `wayline serve`'s settings layered from a config
//! file, the environment and flags. All through the real binary, as an operator runs them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::support;

const TOKEN: &str = "backup-test-token-0123456789";

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `wayline serve` with a config file `config` (TOML), extra environment and flags; its log
/// goes to `log`.
fn serve(config: &Path, env: &[(&str, &str)], flags: &[&std::ffi::OsStr], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_wayline"))
        .arg("serve")
        .args(flags)
        .env("WAYLINE_CONFIG", config)
        .envs(env.iter().copied())
        .env("WAYLINE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_up(client: &reqwest::Client, base: &str, server: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        let failure = if let Some(status) = server.try_wait().unwrap() {
            format!("the server exited ({status})")
        } else if Instant::now() > deadline {
            "the server did not come up within 60 s".to_owned()
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        panic!(
            "{failure}; it logged:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

fn wayline(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (i32, Json) {
    let output = Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "printed JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), json)
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Json) -> (u16, Json) {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Json::Null))
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Json) {
    let response = client
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Json::Null))
}

/// A backup taken while contacts keep arriving holds every contact acknowledged before it
/// began, is restored into a new data directory, and a server started there has them, with
/// their events, and goes on taking new ones; the old server's data is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_a_server_that_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("wayline.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata = \"live\"\ntoken = \"{TOKEN}\"\nplugins = {:?}\n[limits]\nadmin_rate = 1000\n",
            support::plugin_dir()
        ),
    )
    .unwrap();
    let log = dir.path().join("live.log");
    let mut server = serve(&config, &[], &[], &log);
    let client = reqwest::Client::new();
    wait_up(&client, &base, &mut server, &log).await;
    assert!(
        dir.path().join("live/store").is_dir(),
        "data is relative to the config file"
    );

    for n in 0..500 {
        let contact = json!({"id": format!("before-{n}"), "attributes": {"email": format!("b{n}@example.com"), "plan": "pro"}});
        assert_eq!(post(&client, &base, "/v1/contacts", contact).await.0, 201);
    }
    let (status, _) = post(
        &client,
        &base,
        "/v1/events",
        json!({"id": "ev-1", "contact_id": "before-7", "name": "registered", "timestamp": "2026-11-23T10:00:00Z"}),
    )
    .await;
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&client, &base, "/v1/contacts/before-7/events").await.1["events"][0]["id"] != "ev-1" {
        assert!(Instant::now() < deadline, "the event was not processed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Contacts keep arriving while the backup runs: it starts once 20 are in.
    let (flowing, mut arriving) = tokio::sync::mpsc::channel::<()>(1);
    let writer = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let mut acknowledged = 0;
            for n in 0..1000 {
                let contact = json!({"id": format!("during-{n}"), "attributes": {"plan": "team"}});
                if post(&client, &base, "/v1/contacts", contact).await.0 == 201 {
                    acknowledged += 1;
                }
                if acknowledged == 20 {
                    let _ = flowing.try_send(());
                }
            }
            acknowledged
        })
    };
    arriving.recv().await.expect("contacts are being written");
    let file = dir.path().join("wayline.backup");
    let args: Vec<std::ffi::OsString> =
        vec!["backup".into(), "--output".into(), file.clone().into()];
    let env = [("WAYLINE_SERVER", base.as_str()), ("WAYLINE_TOKEN", TOKEN)];
    let backup = {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            wayline(&args, &env)
        })
        .await
        .unwrap()
    };
    let during = writer.await.unwrap();
    assert_eq!(backup.0, 0, "{}", backup.1);
    assert!(backup.1["records"].as_u64().unwrap() > 500, "{}", backup.1);
    assert_eq!(backup.1["sha256"].as_str().unwrap().len(), 64);
    assert!(!file.with_extension("partial").exists());

    // The backup is in the audit log, by whom.
    let (_, audit) = get(&client, &base, "/v1/audit?action=store.backup").await;
    assert_eq!(audit["audit"][0]["action"], "store.backup", "{audit}");
    server.kill().unwrap();
    server.wait().unwrap();

    // Restored into a new data directory, named by a flag over the file's `data`.
    let restored = dir.path().join("restored");
    let restore = || {
        wayline(
            &[
                "restore".as_ref(),
                file.as_os_str(),
                "--data".as_ref(),
                restored.as_os_str(),
            ],
            &[],
        )
    };
    let (code, summary) = restore();
    assert_eq!(
        (code, &summary["sha256"]),
        (0, &backup.1["sha256"]),
        "{summary}"
    );
    // Not twice into the same place.
    let (code, refused) = restore();
    assert_eq!(
        (code, &refused["error"]["code"]),
        (1, &json!("data_not_empty")),
        "{refused}"
    );

    let log = dir.path().join("restored.log");
    let mut server = serve(
        &config,
        &[],
        &["--data".as_ref(), restored.as_os_str()],
        &log,
    );
    wait_up(&client, &base, &mut server, &log).await;
    for n in [0, 7, 499] {
        let (status, contact) = get(&client, &base, &format!("/v1/contacts/before-{n}")).await;
        assert_eq!(status, 200, "before-{n}: {contact}");
        assert_eq!(contact["attributes"]["plan"], "pro");
    }
    let (_, events) = get(&client, &base, "/v1/contacts/before-7/events").await;
    assert_eq!(events["events"][0]["id"], "ev-1", "{events}");
    // Of those written during the backup, a prefix up to some moment: none after a gap.
    let mut restored_during = 0;
    for n in 0..1000 {
        let (status, _) = get(&client, &base, &format!("/v1/contacts/during-{n}")).await;
        if status == 200 {
            assert_eq!(
                restored_during, n,
                "during-{n} is there but an earlier one is not"
            );
            restored_during += 1;
        }
    }
    assert!(restored_during <= during);
    // It carries on: new contacts and events are taken and processed.
    let contact = json!({"id": "after", "attributes": {"email": "b7@example.com"}});
    let (status, body) = post(&client, &base, "/v1/contacts", contact).await;
    assert_eq!(
        status, 409,
        "the restored identities still hold b7's address: {body}"
    );
    let contact = json!({"id": "after", "attributes": {"email": "new@example.com"}});
    assert_eq!(post(&client, &base, "/v1/contacts", contact).await.0, 201);
    let event = json!({"id": "ev-2", "contact_id": "before-7", "name": "opened", "timestamp": "2026-11-24T10:00:00Z"});
    assert_eq!(post(&client, &base, "/v1/events", event).await.0, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, events) = get(&client, &base, "/v1/contacts/before-7/events").await;
        if events["events"][0]["id"] == "ev-2" {
            assert_eq!(events["events"][1]["id"], "ev-1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a new event was not processed: {events}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Settings come from the file, then the environment, then flags; a key the file does not
/// know stops the server with its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_layered_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port) = (free_port(), free_port());
    let config = dir.path().join("wayline.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{file_port}\"\ndata = \"from-file\"\ntoken = \"{TOKEN}\"\n[limits]\nadmin_rate = 0.5\nadmin_burst = 2\n"),
    )
    .unwrap();
    let flag_data = dir.path().join("from-flag");
    let log = dir.path().join("serve.log");
    let listen = format!("127.0.0.1:{env_port}");
    let mut server = serve(
        &config,
        &[
            ("WAYLINE_LISTEN", &listen),
            ("WAYLINE_DATA", "/nonexistent/from-env"),
        ],
        &["--data".as_ref(), flag_data.as_os_str()],
        &log,
    );
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    wait_up(&client, &base, &mut server, &log).await;
    assert!(
        flag_data.join("store").is_dir(),
        "the flag's data directory"
    );
    assert!(!dir.path().join("from-file").exists());
    // The file's admin rate holds: a burst of two, then 429.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&client, &base, "/v1/admin/tokens").await.0);
    }
    assert_eq!(statuses, [200, 200, 429]);
    server.kill().unwrap();
    server.wait().unwrap();

    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nwrokers = 2\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains("unknown field `wrokers`") && said.contains("wayline.toml"),
        "{said}"
    );
}
