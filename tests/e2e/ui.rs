//! The `/ui` status page in a real headless Chromium (Debian's `chromium`
//! and `chromium-driver`), driven over the W3C WebDriver protocol
//! (`support/browser.rs`), against a real `neutral serve` with
//! real agents. The story: without a token the page shows no data; with one
//! it shows the nodes; a node dies and the page shows it down without a
//! reload within 2 s; its region dies and the page shows the region down and
//! the domain answered from the other region; forgetting the token clears
//! everything. A screenshot per step is kept under
//! `target/tmp/ui-screenshots/`; the browser's console must stay free of
//! errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use neutral_e2e::browser::Browser;
use neutral_e2e::cluster::{
    ADMIN_TOKEN, Agent, Daemon, Repo, Service, fast_config, free_port, wait_for,
};
use neutral_e2e::http;
use serde_json::{Value, json};

const FAST: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--heartbeat-timeout",
    "2s",
    "--sync-interval",
    "1s",
    "--no-autoscale",
];

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether node `arguments[0]`'s row shows status `arguments[1]`.
const NODE_STATUS_IS: &str = "const row = document.querySelector(`tr[data-node=\"${arguments[0]}\"]`); \
                              return !!row && row.getAttribute('data-status') === arguments[1];";

/// Data the page shows: node rows, region and domain cards, timeline items.
const DATA_SHOWN: &str = "return document.querySelectorAll('tr[data-node], [data-region], [data-domain], #timeline li').length;";

#[test]
fn the_status_page_follows_a_node_and_a_region_dying_and_shows_nothing_without_a_token() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let files = fast_config(port);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    // Four nodes, so that two going down is no split brain (more than half
    // of all nodes within a minute would be).
    let ips = ["127.0.61.2", "127.0.61.3", "127.0.61.4", "127.0.61.5"];
    let mut services: Vec<Option<Service>> = ips
        .iter()
        .map(|ip| Some(Service::start(ip, port)))
        .collect();
    let mut agents = vec![
        Agent::start(&daemon, dir.path(), "jp-a", "jp", ips[0]),
        Agent::start(&daemon, dir.path(), "jp-b", "jp", ips[1]),
        Agent::start(&daemon, dir.path(), "sg-a", "sg", ips[2]),
        Agent::start(&daemon, dir.path(), "sg-b", "sg", ips[3]),
    ];
    let ids: Vec<String> = agents.iter().map(Agent::node_id).collect();
    for id in &ids {
        wait_for(&format!("{id} up"), Duration::from_secs(20), || {
            (daemon.node_status(id).as_deref() == Some("up")).then_some(())
        });
    }
    let shots = artifacts();
    let url = format!("http://{}/ui", daemon.api);

    // 1. No token: a token form, no data, and nothing fetched.
    browser.goto(&url);
    browser.wait_true(
        "the token form",
        Duration::from_secs(10),
        "return !document.getElementById('login').hidden && document.getElementById('main').hidden;",
        &json!([]),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(browser.eval(DATA_SHOWN, &json!([])), json!(0));
    let page_text = browser.eval("return document.body.innerText;", &json!([]));
    for id in &ids {
        assert!(
            !page_text.as_str().unwrap().contains(id.as_str()),
            "{page_text}"
        );
    }
    let fetched = browser.eval(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname).filter(p => !p.startsWith('/ui'));",
        &json!([]),
    );
    assert_eq!(
        fetched,
        json!([]),
        "the page asked for data without a token"
    );
    browser.screenshot(&shots.join("1-no-token.png"));

    // 2. The admin token: every node up, the domain answering from all three.
    browser.type_into("#token", ADMIN_TOKEN);
    browser.click("#login-form button[type=submit]");
    browser.wait_true(
        "four nodes up on the page",
        Duration::from_secs(10),
        "return document.querySelectorAll('tr[data-status=\"up\"]').length === 4;",
        &json!([]),
    );
    browser.wait_true(
        "four answers",
        Duration::from_secs(10),
        "return document.querySelectorAll('[data-domain=\"app.example.com\"] [data-answer]').length === 4;",
        &json!([]),
    );
    assert_eq!(
        browser.eval(
            "return sessionStorage.getItem('neutral.token');",
            &json!([])
        ),
        json!(ADMIN_TOKEN)
    );
    // Sparklines have drawn a line once two samples are in.
    browser.wait_true(
        "sparklines",
        Duration::from_secs(10),
        "return document.querySelectorAll('tr[data-node] svg.spark polyline').length === 12;",
        &json!([]),
    );
    // The page listens to GET /events: it redraws on changes, not on a
    // one-second poll.
    browser.wait_true(
        "the event stream open",
        Duration::from_secs(10),
        "const live = document.getElementById('live').textContent; return live.startsWith('live') && !live.includes('polling');",
        &json!([]),
    );
    browser.screenshot(&shots.join("2-all-up.png"));
    // Marks this document: a reload would lose the mark.
    browser.eval("window.__sameDocument = true; return true;", &json!([]));

    // 3. jp-b dies (agent and service): the page shows it down within 2 s of
    // the control plane publishing it, without a reload.
    agents[1].stop();
    services[1] = None;
    wait_for("jp-b down", Duration::from_secs(10), || {
        (daemon.node_status(&ids[1]).as_deref() == Some("down")).then_some(())
    });
    let took = browser.wait_true(
        "jp-b down on the page",
        Duration::from_secs(2),
        NODE_STATUS_IS,
        &json!([ids[1], "down"]),
    );
    eprintln!("jp-b shown down {took:?} after GET /nodes said so");
    assert_eq!(
        browser.eval("return window.__sameDocument === true;", &json!([])),
        json!(true),
        "the page reloaded"
    );
    browser.wait_true(
        "jp-b's address out of the answers",
        Duration::from_secs(5),
        "return !document.querySelector(`[data-domain=\"app.example.com\"] [data-answer=\"${arguments[0]}\"]`);",
        &json!([ips[1]]),
    );
    browser.screenshot(&shots.join("3-node-down.png"));

    // 4. jp-a dies too: region jp is down and the domain is answered by sg.
    agents[0].stop();
    services[0] = None;
    wait_for("jp-a down", Duration::from_secs(10), || {
        (daemon.node_status(&ids[0]).as_deref() == Some("down")).then_some(())
    });
    browser.wait_true(
        "region jp down on the page",
        Duration::from_secs(2),
        "const card = document.querySelector('[data-region=\"jp\"] .badge'); return !!card && card.textContent === 'down';",
        &json!([]),
    );
    browser.wait_true(
        "only sg answers",
        Duration::from_secs(5),
        "const a = [...document.querySelectorAll('[data-domain=\"app.example.com\"] [data-answer]')].map(e => e.getAttribute('data-answer')).sort(); return a.join() === arguments[0];",
        &json!([format!("{},{}", ips[2], ips[3])]),
    );
    assert!(
        browser
            .eval(
                "return document.getElementById('timeline').children.length;",
                &json!([])
            )
            .as_u64()
            .unwrap()
            > 0,
        "the timeline shows the audit log"
    );
    browser.screenshot(&shots.join("4-region-down.png"));

    // 5. On a phone-sized screen.
    browser.phone(Some((390, 844)));
    std::thread::sleep(Duration::from_millis(1200));
    let overflow = browser.eval(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        &json!([]),
    );
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page scrolls sideways on a phone: {overflow}"
    );
    browser.screenshot(&shots.join("5-phone.png"));
    browser.phone(None);

    // No console errors in all of that.
    let errors: Vec<Value> = browser
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // 6. Forgetting the token clears every piece of data.
    browser.click("#forget");
    browser.wait_true(
        "the token form again",
        Duration::from_secs(5),
        "return !document.getElementById('login').hidden;",
        &json!([]),
    );
    assert_eq!(browser.eval(DATA_SHOWN, &json!([])), json!(0));
    assert_eq!(
        browser.eval(
            "return sessionStorage.getItem('neutral.token');",
            &json!([])
        ),
        Value::Null
    );
    browser.screenshot(&shots.join("6-token-forgotten.png"));

    // 7. A wrong token. Where the control plane refuses reads without a
    // valid token, the page forgets it and shows no data; where reads are
    // still open to anyone, the page can only show what any client may read.
    let wrong = "not-the-token-of-anyone-at-all";
    let reads_guarded = matches!(
        http::request(daemon.api, "GET", "/nodes", Some(wrong), None)
            .unwrap()
            .status,
        401 | 403
    );
    browser.type_into("#token", wrong);
    browser.click("#login-form button[type=submit]");
    if reads_guarded {
        browser.wait_true(
            "the token refused",
            Duration::from_secs(5),
            "return !document.getElementById('login').hidden && document.getElementById('login-why').textContent.includes('refused');",
            &json!([]),
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(browser.eval(DATA_SHOWN, &json!([])), json!(0));
        browser.screenshot(&shots.join("7-token-refused.png"));
    } else {
        eprintln!(
            "reads are open to any client on this control plane: the wrong-token step only checks the page keeps working"
        );
        browser.wait_true(
            "data with an unchecked token",
            Duration::from_secs(5),
            "return document.querySelectorAll('tr[data-node]').length === 4;",
            &json!([]),
        );
    }
    drop(agents);
}

/// The page and its assets without a browser: served as the same static
/// bytes whatever the query string, carrying no data of the control plane,
/// and hostile requests leave the daemon answering.
#[test]
fn the_page_is_static_carries_no_data_and_shrugs_off_hostile_requests() {
    let dir = tempfile::tempdir().unwrap();
    let files = fast_config(free_port());
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    wait_for("the first sync", Duration::from_secs(20), || {
        daemon.get("/status").json()["commit"].as_str().map(|_| ())
    });
    let page = daemon.get("/ui");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    // No data in the page: not the domain, not the regions' names as data,
    // not the commit.
    let commit = daemon.get("/status").json()["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    for secret in ["app.example.com", commit.as_str(), ADMIN_TOKEN] {
        for asset in ["/ui", "/ui/app.js", "/ui/app.css"] {
            assert!(
                !daemon.get(asset).body.contains(secret),
                "{asset} holds {secret}"
            );
        }
    }

    // Percent-encoded NULs, invalid UTF-8, markup and quotes, 8 KiB of it.
    let junk: String = "%00%ff%3Cscript%3E%27%22&a=%%zz".repeat(250);
    for path in [
        format!("/ui?{junk}"),
        format!("/ui/?token={junk}"),
        format!("/ui/app.js?{junk}"),
    ] {
        let response = daemon.get(&path);
        assert_eq!(response.status, 200, "{}", &path[..40]);
        assert!(
            !response.body.contains("%3Cscript"),
            "the query echoed back"
        );
    }
    // Raw markup in the request line is not HTTP: refused, not served.
    let raw = http::request(daemon.api, "GET", "/ui?<script>'\"", None, None).unwrap();
    assert_eq!(raw.status, 400);
    let same = daemon.get(&format!("/ui?{junk}"));
    assert_eq!(same.body, page.body);
    for path in ["/ui/nothing", "/ui/../status", "/ui/app.js/x", "/uix"] {
        let response = daemon.get(path);
        assert_eq!(response.status, 404, "{path}: {}", response.body);
    }
    let post = http::request(daemon.api, "POST", "/ui", None, Some("{}")).unwrap();
    assert_eq!(post.status, 405);
    // A 200 KiB query string: refused or answered, never a crash.
    let huge = format!("/ui?{}", "a".repeat(200 * 1024));
    let _ = http::request(daemon.api, "GET", &huge, None, None);
    assert_eq!(daemon.get("/healthz").status, 200);
    assert_eq!(daemon.get("/ui").body, page.body);
}
