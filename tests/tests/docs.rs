//! The docs cannot fall behind the code: docs/configuration.md documents every setting the
//! services read,
//! and the operator guide's configuration reference (`docs/operations.md`) is generated from
//! the services' config types. `GCAL_WRITE_DOCS=1 cargo test -p e2e --test docs` rewrites it;
//! without that variable a stale reference fails the test.

use std::fmt::Write as _;

use service_kit::config::SettingDoc;
use service_kit::{Env, ServiceConfig};

#[test]
fn the_configuration_page_documents_every_setting_with_its_default() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let mut env = Env::from_pairs(Vec::<(String, String)>::new());
    let _ = api::ApiConfig::read(&mut env);
    let _ = oauth_worker::OAuthWorkerConfig::read(&mut env);
    let _ = metadata_worker::MetadataWorkerConfig::read(&mut env);
    let _ = mailer_worker::MailerWorkerConfig::read(&mut env);
    for doc in env.documented() {
        let row = format!("| `{}` | `{}` |", doc.name, doc.default.unwrap_or(""));
        assert!(
            readme.contains(&row),
            "docs/configuration.md's table lacks the row starting {row}"
        );
    }
    // Common settings are read once per service; the four services add one address each.
    assert!(env.documented().len() >= 4 * 13 + 4);
}

#[test]
fn the_operator_guide_has_the_current_configuration_reference() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../", "docs/operations.md");
    let guide = std::fs::read_to_string(path).expect("docs/operations.md");
    let regenerated = regenerate(&guide).expect("the guide has the generated block's markers");
    if std::env::var_os("GCAL_WRITE_DOCS").is_some() {
        std::fs::write(path, &regenerated).expect("docs/operations.md is writable");
    } else {
        assert!(
            guide == regenerated,
            "docs/operations.md's configuration reference differs from the code: run `GCAL_WRITE_DOCS=1 cargo test -p e2e --test docs`"
        );
    }
    // Every service's own address is in it, and nothing is listed without a meaning.
    for setting in [
        "API_HTTP_ADDR",
        "OAUTH_WORKER_HTTP_ADDR",
        "METADATA_WORKER_HEALTH_ADDR",
        "MAILER_WORKER_HEALTH_ADDR",
    ] {
        assert!(
            regenerated.contains(&format!("| `{setting}` |")),
            "{setting}"
        );
    }
    assert!(!regenerated.contains("|  |"));
}

/// The operator guide's permission table is the one the credentials carry.
#[test]
fn the_operator_guide_has_the_current_permission_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../", "docs/operations.md");
    let guide = std::fs::read_to_string(path).expect("docs/operations.md");
    let table = schemas::bus_access::table();
    assert!(
        guide.contains(&table),
        "docs/operations.md's permission table differs from `gcal-ops nats-auth permissions`; paste its output:\n{table}"
    );
}

// The generated block: every service's settings, from what its `ServiceConfig::read` asks
// `Env` for.

/// Where the generated block lives, between these two lines.
const BEGIN: &str = "<!-- config-reference:begin (generated from the config types by `GCAL_WRITE_DOCS=1 cargo test -p e2e --test docs`; do not edit) -->";
const END: &str = "<!-- config-reference:end -->";

fn settings_of<C: ServiceConfig>() -> Vec<SettingDoc> {
    let mut env = Env::from_pairs(Vec::<(String, String)>::new());
    let _ = C::read(&mut env);
    env.documented().to_vec()
}

/// Every service and the settings it reads, in start-up order.
fn services() -> Vec<(&'static str, Vec<SettingDoc>)> {
    vec![
        (api::SERVICE, settings_of::<api::ApiConfig>()),
        (
            oauth_worker::SERVICE,
            settings_of::<oauth_worker::OAuthWorkerConfig>(),
        ),
        (
            metadata_worker::SERVICE,
            settings_of::<metadata_worker::MetadataWorkerConfig>(),
        ),
        (
            mailer_worker::SERVICE,
            settings_of::<mailer_worker::MailerWorkerConfig>(),
        ),
    ]
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn row(out: &mut String, doc: &SettingDoc) {
    let default = match doc.default {
        Some("") | None => "*(unset)*".to_owned(),
        Some(value) => format!("`{}`", cell(value)),
    };
    let _ = writeln!(
        out,
        "| `{}` | {} | {} |",
        doc.name,
        default,
        cell(doc.description)
    );
}

/// The generated block, markers included.
fn markdown() -> String {
    let services = services();
    let everywhere: Vec<&SettingDoc> = services[0]
        .1
        .iter()
        .filter(|doc| {
            services
                .iter()
                .all(|(_, docs)| docs.iter().any(|d| d.name == doc.name))
        })
        .collect();
    let shared = |name: &str| everywhere.iter().any(|d| d.name == name);
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out);
    let _ = writeln!(out, "### Every service");
    let _ = writeln!(out);
    let _ = writeln!(out, "| setting | default | meaning |");
    let _ = writeln!(out, "|---|---|---|");
    for doc in &everywhere {
        row(&mut out, doc);
    }
    for (service, docs) in &services {
        let own: Vec<&SettingDoc> = docs.iter().filter(|d| !shared(d.name)).collect();
        let _ = writeln!(out);
        let _ = writeln!(out, "### {service}");
        let _ = writeln!(out);
        let _ = writeln!(out, "| setting | default | meaning |");
        let _ = writeln!(out, "|---|---|---|");
        for doc in own {
            row(&mut out, doc);
        }
    }
    let _ = writeln!(out);
    let _ = write!(out, "{END}");
    out
}

/// `guide` with its generated block replaced by the current one; `None` when the markers are
/// missing.
fn regenerate(guide: &str) -> Option<String> {
    let start = guide.find(BEGIN)?;
    let end = guide[start..].find(END)? + start + END.len();
    Some(format!(
        "{}{}{}",
        &guide[..start],
        markdown(),
        &guide[end..]
    ))
}
