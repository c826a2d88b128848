//! The hub's status page (issue #18 item 4) in a real headless Chromium
//! (Debian's `chromium` driven through `chromedriver` by fantoccini): a
//! strongSwan facility shown up, screenshots in English and Japanese, and
//! the same page — never reloaded, refreshed by its own script — showing
//! the facility down within seconds of its tunnel being terminated.
//!
//! Chromium and chromedriver run inside the hub's namespace (the page is
//! on its loopback); the WebDriver client reaches chromedriver from a
//! thread that joined that namespace (network namespaces are per thread).
//! `RENKEI_BLESS_SCREENSHOTS=1` also writes the screenshots to
//! `docs/status-page.png` and `docs/status-page.ja.png` for the README.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::{Client, ClientBuilder, Locator};
use renkei_interop_tests::{Facility, Lab, Role};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PAGE_PORT: u16 = 9815;
const DRIVER_PORT: u16 = 9516;
/// A failure timeout for the browser's side, never an expected duration.
const PATIENCE: Duration = Duration::from_secs(30);

/// Moves the calling thread into the network namespace `ns`.
#[allow(unsafe_code)]
fn join_netns(ns: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns(2) with a valid namespace descriptor; it changes only
    // this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// chromedriver (and the Chromium it starts), stopped and its profile
/// removed on drop, also when the test fails.
struct Browser {
    driver: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium processes of this profile only (found by its unique
        // directory on their command line), by process ID.
        if let Ok(dir) = std::fs::read_dir("/proc") {
            let needle = self.profile.to_string_lossy().into_owned();
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&needle) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn start_browser(lab: &Lab) -> Browser {
    let profile = lab.dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={DRIVER_PORT}"))
        .arg(format!(
            "--log-path={}",
            lab.dir.join("chromedriver.log").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver not found: run scripts/install-deps.sh");
    let browser = Browser { driver, profile };
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", DRIVER_PORT)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    browser
}

async fn connect(profile: &Path, lang: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1500,560",
                format!("--user-data-dir={}", profile.display()),
                format!("--lang={lang}"),
            ],
            "prefs": { "intl.accept_languages": lang },
        }),
    );
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
        .await
        .expect("WebDriver session")
}

/// The facility's row's `data-state`, as the page shows it now.
async fn state_of(c: &Client, name: &str) -> Option<String> {
    let row = c
        .find(Locator::Css(&format!("tr[data-facility='{name}']")))
        .await
        .ok()?;
    row.attr("data-state").await.ok()?
}

/// Waits (up to [`PATIENCE`]) until the page shows `name` in `state`.
async fn wait_state(c: &Client, name: &str, state: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if state_of(c, name).await.as_deref() == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {name} {state}: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(c: &Client, lab: &Lab, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    std::fs::write(lab.dir.join(name), &png).unwrap();
    if std::env::var_os("RENKEI_BLESS_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::write(docs.join(name), &png).unwrap();
    }
}

#[test]
fn status_page_shows_a_facility_going_down_live_in_chromium() {
    let mut f = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    );
    f.serve_args = vec!["--http".into(), format!("127.0.0.1:{PAGE_PORT}")];
    let lab = Lab::start(f);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    // Traffic for the graph, then the hub's history has something.
    assert!(lab.ping(false, 1000, 5));

    let hub_ns = lab.hub_ns.clone();
    let page = format!("http://127.0.0.1:{PAGE_PORT}/");
    std::thread::scope(|s| {
        s.spawn(|| {
            join_netns(&hub_ns);
            let browser = start_browser(&lab);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                // Japanese first, from the browser's Accept-Language.
                let c = connect(&browser.profile, "ja").await;
                c.goto(&page).await.unwrap();
                wait_state(&c, "kyoto", "up").await;
                let html = c.source().await.unwrap();
                assert!(html.contains("<html lang=\"ja\">"), "{html}");
                assert!(html.contains("施設"), "{html}");
                assert!(html.contains("接続"), "{html}");
                screenshot(&c, &lab, "status-page.ja.png").await;
                // The switch link to English.
                c.find(Locator::Css("nav a"))
                    .await
                    .unwrap()
                    .click()
                    .await
                    .unwrap();
                wait_state(&c, "kyoto", "up").await;
                let html = c.source().await.unwrap();
                assert!(html.contains("<html lang=\"en\">"), "{html}");
                assert!(html.contains("Recent events"), "{html}");
                screenshot(&c, &lab, "status-page.png").await;
                let updated = c
                    .find(Locator::Css("#live"))
                    .await
                    .unwrap()
                    .attr("data-updated")
                    .await
                    .unwrap();

                // The tunnel goes away; the same page, not reloaded,
                // shows the facility down.
                let out = lab.swanctl(&["--terminate", "--ike", "hub", "--timeout", "20"]);
                assert!(out.status.success(), "{out:?}");
                wait_state(&c, "kyoto", "down").await;
                let refreshed = c
                    .find(Locator::Css("#live"))
                    .await
                    .unwrap()
                    .attr("data-updated")
                    .await
                    .unwrap();
                assert_ne!(updated, refreshed, "the page's script refreshed it");
                assert_eq!(
                    c.current_url().await.unwrap().query(),
                    Some("lang=en"),
                    "not reloaded elsewhere"
                );
                // The event is listed.
                c.find(Locator::Css("table.events tr[data-kind='sa.ike_down']"))
                    .await
                    .expect("an sa.ike_down event on the page");
                c.close().await.unwrap();
            });
            drop(browser);
        });
    });
}
