//! The web console in a real browser: headless Chromium driven through
//! WebDriver (chromedriver, started by the test on a free loopback port)
//! against `enricher serve`'s routes on the real services. Signs in with an
//! API token, searches, opens a customer, reads a field's evidence, adds a
//! note, sets and clears fields, exports CSV and signs out; a customer full
//! of `<script>` and quotes renders as text and runs nothing. Screenshots of
//! both pages at 1280 and 390 px are written to `target/console-screenshots`
//! (or to `ENRICHER_CONSOLE_SCREENSHOTS`, e.g. `docs/console` to regenerate
//! the committed ones). Chromium and chromedriver are required: without
//! them the test fails and says how to install them.

mod common;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::api_server::{RunningApi, WAIT, token};
use common::{TestApp, repo_root, unique};
use enricher::api::auth::Scope;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const HOSTILE: &str = "<script>window.__pwned = 1; document.title = 'pwned'</script>\"quoted\" 'single' <img src=x onerror=\"window.__pwned = 2\">";

/// chromedriver, killed when the test ends however it ends.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// A program named by `variable`, else found on PATH under one of `names`;
/// the test fails (never skips) when there is none.
fn required_program(variable: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    names
        .iter()
        .find_map(|name| on_path(name))
        .unwrap_or_else(|| {
            panic!(
                "the console's browser test needs {} on PATH (or {variable}): install the Debian \
             packages `chromium chromium-driver` (`apt-get install chromium chromium-driver`; \
             scripts/test installs them)",
                names.join(" or ")
            )
        })
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn start_chromedriver() -> Chromedriver {
    let program = required_program("ENRICHER_CHROMEDRIVER", &["chromedriver"]);
    let port = free_port();
    let child = Command::new(&program)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let driver = Chromedriver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not listen on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver
}

async fn browser(driver: &Chromedriver) -> Client {
    let chromium = required_program("ENRICHER_CHROMIUM", &["chromium", "chromium-browser"]);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--lang=en-US", "--hide-scrollbars"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a headless Chromium session through chromedriver")
}

/// `event` with the keys of `extra` added or replaced.
fn with(mut event: Value, extra: Value) -> Value {
    if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
        event.extend(extra.clone());
    }
    event
}

async fn path_of(client: &Client) -> String {
    client.current_url().await.expect("url").path().to_owned()
}

async fn element(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
}

async fn text_of(client: &Client, css: &str) -> String {
    element(client, css).await.text().await.expect("text")
}

async fn click(client: &Client, css: &str) {
    element(client, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Clicks `css`, which loads a new page (a link or a form), and returns once
/// the old page is gone and the new one has loaded: reading the old page's
/// elements after the click would race the navigation.
async fn click_to_load(client: &Client, css: &str) {
    let old_page = client
        .find(Locator::Css("html"))
        .await
        .expect("the current page");
    click(client, css).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while old_page.tag_name().await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clicking {css} did not load a page within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let state = client.execute("return document.readyState;", vec![]).await;
        if matches!(state, Ok(Value::String(ref s)) if s == "complete") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page after clicking {css} did not finish loading within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let field = element(client, css).await;
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

async fn search(client: &Client, q: &str) -> Vec<String> {
    type_into(client, "#q", q).await;
    click_to_load(client, "#search").await;
    let mut names = Vec::new();
    for link in client
        .find_all(Locator::Css("a.customer-link"))
        .await
        .expect("rows")
    {
        names.push(link.text().await.expect("name"));
    }
    names
}

/// Writes a screenshot of the current page at `width` px.
async fn screenshot(client: &Client, dir: &Path, name: &str, width: u32, height: u32) {
    client
        .set_window_size(width, height)
        .await
        .expect("window size");
    let inner: Value = client
        .execute("return window.innerWidth;", vec![])
        .await
        .expect("innerWidth");
    assert_eq!(inner, json!(width), "the viewport is {width} px wide");
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(dir.join(format!("{name}-{width}.png")), png).expect("write screenshot");
    client
        .set_window_size(1280, 1000)
        .await
        .expect("window size");
}

async fn not_pwned(client: &Client) {
    let title = client.title().await.expect("title");
    assert!(
        !title.contains("pwned"),
        "an injected script ran: title {title:?}"
    );
    let flag: Value = client
        .execute("return typeof window.__pwned;", vec![])
        .await
        .expect("script");
    assert_eq!(flag, json!("undefined"), "an injected script ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    common::show_worker_log();
    let shots = std::env::var_os("ENRICHER_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        })
        .unwrap_or_else(|| repo_root().join("target/console-screenshots"));
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let driver = start_chromedriver().await;

    let app = TestApp::new().await;
    let ws = unique("wsc");
    let worker = app.start_worker().await;
    app.publish(&[
        with(
            common::chat(&ws, "c1", "conv-ann", "web-ann", "customer", "Hello, I need help with my order"),
            json!({"occurred_at": "2026-03-01T10:00:00Z",
                   "identity_hint": {"name": "Ann Lee", "phone": "(650) 253-0000"},
                   "visitor": {"browser": "Firefox", "os": "Linux", "device": "desktop", "country": "US"}}),
        ),
        with(
            common::chat(&ws, "c2", "conv-ann", "web-ann", "customer", "Hi, my email is ann.lee@example.com"),
            json!({"occurred_at": "2026-03-01T10:01:00Z"}),
        ),
        with(
            common::chat(&ws, "c3", "conv-x", "15550002222", "customer", HOSTILE),
            json!({"occurred_at": "2026-03-02T08:00:00Z", "platform": "whatsapp"}),
        ),
        with(
            common::chat(&ws, "c4", "conv-bo", "tg-bo", "customer", "hello"),
            json!({"occurred_at": "2026-03-02T09:00:00Z", "platform": "telegram",
                   "identity_hint": {"name": "Bo Chen"}}),
        ),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 4, WAIT)
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.customer_fields WHERE field IN ('name', 'email', 'phone')",
        4,
        WAIT,
    )
    .await;
    let token = token(&app, &ws, "agent-jo", &[Scope::Write]).await;
    let console = RunningApi::start_with(&app, enricher::console::app).await;
    let client = browser(&driver).await;

    // Signed out, every page leads to the sign-in page.
    client
        .goto(&console.url("/ui/customers"))
        .await
        .expect("goto");
    assert_eq!(path_of(&client).await, "/ui/sign-in");
    type_into(&client, "#token", "enr_not-a-token").await;
    click_to_load(&client, "#sign-in").await;
    assert!(
        text_of(&client, ".alert")
            .await
            .contains("unknown or revoked")
    );
    type_into(&client, "#token", &token).await;
    click_to_load(&client, "#sign-in").await;
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("table.customers"))
        .await
        .expect("the list after signing in");
    assert_eq!(path_of(&client).await, "/ui/customers");
    let cookie = client
        .get_named_cookie("enricher_session")
        .await
        .expect("session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert_ne!(cookie.value(), token, "the cookie is not the token");
    let rows = client
        .find_all(Locator::Css("table.customers tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 3);
    assert!(
        text_of(&client, "table.customers")
            .await
            .contains("Guest User")
    );
    not_pwned(&client).await;
    assert!(
        text_of(&client, "table.customers")
            .await
            .contains("<script>window.__pwned"),
        "the hostile last message shows as text"
    );
    screenshot(&client, &shots, "customers", 1280, 800).await;
    screenshot(&client, &shots, "customers", 390, 844).await;

    // Search by part of the name and by phone in another format; no match says so.
    assert_eq!(search(&client, "nn L").await, vec!["Ann Lee"]);
    assert_eq!(search(&client, "+1 650 253 0000").await, vec!["Ann Lee"]);
    assert_eq!(search(&client, "tg-bo").await, vec!["Bo Chen"]);
    assert!(search(&client, "nobody at all").await.is_empty());
    assert!(
        text_of(&client, "#no-match")
            .await
            .contains("No chat users match")
    );

    // The customer page: the evidence of a field is the customer's own words.
    search(&client, "650-253-0000").await;
    click_to_load(&client, "a.customer-link").await;
    assert_eq!(text_of(&client, "#customer-name").await, "Ann Lee");
    let ann_path = path_of(&client).await;
    click(&client, "#field-email details.evidence summary").await;
    let quote = text_of(&client, "#field-email blockquote").await;
    assert!(quote.contains("ann.lee@example.com"), "evidence: {quote}");
    assert!(
        text_of(&client, "#field-email .source")
            .await
            .contains("customer")
    );

    // A note, with author, shows up at once.
    type_into(&client, "#note-text", "Prefers email; call back on Monday").await;
    click_to_load(&client, "#add-note").await;
    let notes = text_of(&client, "ol.notes").await;
    assert!(
        notes.contains("Prefers email; call back on Monday"),
        "{notes}"
    );
    assert!(notes.contains("agent-jo"), "{notes}");
    click(&client, "#field-email details.evidence summary").await;
    screenshot(&client, &shots, "customer", 1280, 1400).await;
    screenshot(&client, &shots, "customer", 390, 1600).await;

    // Clearing the phone removes it and the history keeps it.
    click(&client, "#field-phone details.edit summary").await;
    click_to_load(&client, "#field-phone button[value=clear]").await;
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#history"))
        .await
        .expect("page after clearing");
    assert!(
        client.find(Locator::Css("#field-phone")).await.is_err(),
        "the phone is gone"
    );
    let history = text_of(&client, "#history").await;
    assert!(
        history.contains("cleared") && history.contains("+16502530000"),
        "{history}"
    );
    assert_eq!(path_of(&client).await, ann_path);

    // The transcript of a conversation.
    click_to_load(&client, "#conv-conv-ann a.transcript-link").await;
    let transcript = text_of(&client, "ol.transcript").await;
    assert!(
        transcript.contains("my email is ann.lee@example.com"),
        "{transcript}"
    );

    // Export CSV: the link streams the API's export with the session.
    client
        .goto(&console.url("/ui/customers"))
        .await
        .expect("goto");
    let href = client
        .find(Locator::Css("#export-csv"))
        .await
        .expect("export link")
        .attr("href")
        .await
        .expect("href")
        .expect("an href");
    let csv: Value = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0]).then(r => r.text().then(t => done([r.status, r.headers.get('content-type'), t])));",
            vec![json!(href)],
        )
        .await
        .expect("fetch the export");
    assert_eq!(csv[0], json!(200), "{csv}");
    assert!(
        csv[1].as_str().unwrap_or("").starts_with("text/csv"),
        "{csv}"
    );
    let body = csv[2].as_str().unwrap_or("");
    assert!(body.starts_with("customer_id,"), "{body}");
    assert_eq!(
        body.lines().count(),
        4,
        "a header and three customers: {body}"
    );
    assert!(body.contains("ann.lee@example.com"), "{body}");

    // The hostile customer: its text, a field and a note full of markup render as text.
    search(&client, "15550002222").await;
    click_to_load(&client, "a.customer-link").await;
    not_pwned(&client).await;
    type_into(&client, "#set-field-value", HOSTILE).await;
    client
        .find(Locator::Css("#set-field-name"))
        .await
        .expect("field select")
        .select_by_value("location")
        .await
        .expect("select location");
    click_to_load(&client, "#set-field").await;
    not_pwned(&client).await;
    let location = text_of(&client, "#field-location .value").await;
    assert!(location.contains("<script>window.__pwned"), "{location}");
    assert!(location.contains("\"quoted\" 'single'"), "{location}");
    type_into(&client, "#note-text", HOSTILE).await;
    click_to_load(&client, "#add-note").await;
    not_pwned(&client).await;
    assert!(
        text_of(&client, "ol.notes")
            .await
            .contains("<img src=x onerror=")
    );
    type_into(&client, "#instructions-text", HOSTILE).await;
    click_to_load(&client, "#save-instructions").await;
    not_pwned(&client).await;
    click_to_load(&client, "#conv-conv-x a.transcript-link").await;
    not_pwned(&client).await;
    assert!(text_of(&client, "ol.transcript").await.contains("<script>"));

    // A form without the session's CSRF token is refused, even with the cookie.
    let session = client
        .get_named_cookie("enricher_session")
        .await
        .expect("session cookie")
        .value()
        .to_owned();
    let forged = reqwest::Client::new()
        .post(console.url(&format!("{ann_path}/notes")))
        .header("cookie", format!("enricher_session={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}&text=forged", "0".repeat(64)))
        .send()
        .await
        .expect("forged post");
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.notes WHERE text = 'forged'")
            .await,
        0
    );

    // Sign out: the session ends and pages lead to the sign-in page again.
    click_to_load(&client, "#sign-out").await;
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .expect("sign-in page");
    assert_eq!(path_of(&client).await, "/ui/sign-in");
    for path in ["/ui/customers", ann_path.as_str()] {
        client.goto(&console.url(path)).await.expect("goto");
        assert_eq!(
            path_of(&client).await,
            "/ui/sign-in",
            "{path} after signing out"
        );
    }
    let replayed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(console.url("/ui/customers"))
        .header("cookie", format!("enricher_session={session}"))
        .send()
        .await
        .expect("replayed cookie");
    assert_eq!(
        replayed.status(),
        reqwest::StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );

    println!("console screenshots: {}", shots.display());
    client.close().await.expect("close the browser");
    console.stop().await;
    worker.stop().await;
}
