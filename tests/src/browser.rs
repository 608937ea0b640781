//! A real, headless Chromium for tests that click through pages (the OAuth consent page, our
//! callback's success page), driven over WebDriver.
//!
//! Each [`Browser`] runs its own `chromedriver` on a free loopback port, as a child that dies
//! with the test process, and one Chromium session with a fresh profile. Chromium talks to the
//! driver over a pipe (`--remote-debugging-pipe`), so it exits when the driver does: nothing
//! outlives the test, even when the test process is killed.
//!
//! The binaries come from Debian (`scripts/infra/install.sh` installs them):
//! `CHROMIUM_BIN` (default `/usr/bin/chromium`) and `CHROMEDRIVER_BIN` (default
//! `/usr/bin/chromedriver`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let browser = e2e::browser::Browser::start().await?;
//! browser.goto("http://127.0.0.1:8080/").await?;
//! browser.click("#allow").await?;
//! browser
//!     .wait_for_url(|url| url.path() == "/callback", Duration::from_secs(5))
//!     .await?;
//! browser.screenshot("consent/after-allow.png").await?;
//! browser.close().await?;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use url::Url;

use crate::process;

/// The browser window, fixed so that screenshots are comparable from run to run. Screenshots
/// show the viewport: as wide as the window, less high (1280×757 with Chromium 156).
pub const WINDOW_SIZE: (u32, u32) = (1280, 900);

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to listen, and Chromium to open a session.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the `wait_for*` helpers look again.
const POLL: Duration = Duration::from_millis(50);

/// A headless Chromium session and the chromedriver serving it. [`Browser::close`] ends both;
/// dropping it stops the driver (and with it Chromium).
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Child,
    /// The driver's log and Chromium's profile; named in startup errors.
    dir: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session in a
    /// 1280×900 window. Fails, saying how to install them, if the binaries are missing.
    pub async fn start() -> anyhow::Result<Self> {
        let chromium = binary("CHROMIUM_BIN", DEFAULT_CHROMIUM)?;
        let chromedriver = binary("CHROMEDRIVER_BIN", DEFAULT_CHROMEDRIVER)?;
        let dir = process::scratch_dir("browser");
        let (mut driver, port) = {
            let dir = dir.clone();
            // Polls a log file with blocking sleeps; keep that off the async runtime.
            tokio::task::spawn_blocking(move || start_driver(&chromedriver, &dir))
                .await
                .context("the chromedriver start task failed")??
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities(&chromium, &dir.join("profile")));
        let session = tokio::time::timeout(
            STARTUP_TIMEOUT,
            builder.connect(&format!("http://127.0.0.1:{port}")),
        )
        .await;
        let client = match session {
            Ok(Ok(client)) => client,
            failed => {
                process::terminate(&mut driver);
                let log = dir.join("chromedriver.log");
                let why = match failed {
                    Ok(Err(e)) => anyhow::Error::new(e),
                    _ => anyhow::anyhow!("no session within {STARTUP_TIMEOUT:?}"),
                };
                return Err(why.context(format!(
                    "chromedriver could not start {} (driver log: {})",
                    chromium.display(),
                    log.display()
                )));
            }
        };
        Ok(Self {
            client,
            driver,
            dir,
        })
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This browser's scratch directory (driver log, Chromium profile).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    /// The URL of the page shown now.
    pub async fn current_url(&self) -> anyhow::Result<Url> {
        self.client
            .current_url()
            .await
            .context("reading the current URL")
    }

    /// Clicks the element `css` selects; a click that submits a form returns once the next
    /// page has loaded.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        let clicked = element.click().await;
        self.check(clicked, || format!("clicking {css:?}")).await
    }

    /// Replaces the value of the input `css` selects with `text`.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        let cleared = element.clear().await;
        self.check(cleared, || format!("clearing {css:?}")).await?;
        let typed = element.send_keys(text).await;
        self.check(typed, || format!("typing into {css:?}")).await
    }

    /// Ticks or unticks the checkbox `css` selects, by clicking it if needed.
    pub async fn set_checked(&self, css: &str, checked: bool) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        if self.is_checked(&element, css).await? != checked {
            let clicked = element.click().await;
            self.check(clicked, || format!("clicking {css:?}")).await?;
        }
        anyhow::ensure!(
            self.is_checked(&element, css).await? == checked,
            "{css:?} on {} did not become {}",
            self.location().await,
            if checked { "checked" } else { "unchecked" }
        );
        Ok(())
    }

    /// The rendered text of the element `css` selects.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let element = self.find(css).await?;
        let text = element.text().await;
        self.check(text, || format!("reading the text of {css:?}"))
            .await
    }

    /// The current page's HTML, as the browser sees it now.
    pub async fn page_source(&self) -> anyhow::Result<String> {
        let source = self.client.source().await;
        self.check(source, || "reading the page source".to_owned())
            .await
    }

    /// Waits until an element matches `css`, and returns it.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let found = self
            .client
            .wait()
            .at_most(timeout)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await;
        self.check(found, || format!("waiting {timeout:?} for {css:?}"))
            .await
    }

    /// Waits until the current URL satisfies `done`, and returns it.
    pub async fn wait_for_url(
        &self,
        done: impl Fn(&Url) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Url> {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.current_url().await?;
            if done(&url) {
                return Ok(url);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the browser is still at {url} after {timeout:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Takes a PNG screenshot of the window, saves it and returns its bytes. A relative `path`
    /// is taken under [`screenshot_dir`] (`target/test-screenshots`), so the pictures outlive
    /// the test for a person to look at.
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> anyhow::Result<Vec<u8>> {
        let path = screenshot_dir().join(path);
        let png = self.client.screenshot().await;
        let png = self
            .check(png, || {
                format!("taking a screenshot for {}", path.display())
            })
            .await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &png).with_context(|| format!("writing {}", path.display()))?;
        Ok(png)
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let closed = self.client.clone().close().await;
        process::terminate(&mut self.driver);
        closed.context("ending the browser session")
    }

    async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let found = self.client.find(Locator::Css(css)).await;
        self.check(found, || format!("finding {css:?}")).await
    }

    async fn is_checked(&self, element: &Element, css: &str) -> anyhow::Result<bool> {
        let checked = element.prop("checked").await;
        let checked = self
            .check(checked, || format!("reading whether {css:?} is checked"))
            .await?;
        Ok(checked.as_deref() == Some("true"))
    }

    /// Adds what was being done, and on which page, to a WebDriver error.
    async fn check<T>(
        &self,
        result: Result<T, CmdError>,
        doing: impl FnOnce() -> String,
    ) -> anyhow::Result<T> {
        match result {
            Ok(value) => Ok(value),
            Err(e) => {
                let at = self.location().await;
                Err(anyhow::Error::new(e).context(format!("{} on {at}", doing())))
            }
        }
    }

    /// The current URL for an error message; never fails.
    async fn location(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(_) => "an unknown page".to_owned(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium follows the driver: its end of the debugging pipe closes.
        process::terminate(&mut self.driver);
    }
}

/// Where [`Browser::screenshot`] puts relative paths: `test-screenshots` in cargo's target
/// directory (found from the test binary's path, `<target>/<profile>/deps/<test>`), else in
/// the system's temporary directory.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        if deps.file_name()? != "deps" {
            return None;
        }
        Some(deps.parent()?.parent()?.to_path_buf())
    });
    target
        .unwrap_or_else(std::env::temp_dir)
        .join("test-screenshots")
}

/// The binary named by `var`, else `default`; an error saying how to get it if it is missing.
fn binary(var: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    anyhow::ensure!(
        path.is_file(),
        "{} not found ({var} or the default {default}); install Chromium and chromedriver with \
         scripts/infra/install.sh (Debian packages chromium and chromium-driver)",
        path.display()
    );
    Ok(path)
}

/// Starts chromedriver on a free port and waits until it listens. Retries on another port if
/// someone took the chosen one first.
fn start_driver(chromedriver: &Path, dir: &Path) -> anyhow::Result<(Child, u16)> {
    let log = dir.join("chromedriver.log");
    let mut attempt = 1;
    loop {
        let port = process::free_port();
        let mut command = Command::new(chromedriver);
        command.arg(format!("--port={port}"));
        let mut child = process::spawn(command, &log)
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        match process::wait_for_line(&mut child, &log, "started successfully", STARTUP_TIMEOUT) {
            Ok(_) => return Ok((child, port)),
            Err(e) => {
                process::terminate(&mut child);
                if attempt == 3 {
                    return Err(e).context("chromedriver did not start");
                }
                attempt += 1;
            }
        }
    }
}

/// Headless Chromium in a fixed window with a fresh profile; `--remote-debugging-pipe` makes
/// it exit when chromedriver does.
fn capabilities(chromium: &Path, profile: &Path) -> serde_json::Map<String, Value> {
    let (width, height) = WINDOW_SIZE;
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--no-first-run".to_owned(),
        "--remote-debugging-pipe".to_owned(),
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".to_owned(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({ "binary": chromium, "args": args }),
    );
    capabilities
}
