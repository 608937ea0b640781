//! The README documents every setting the services read, so the docs cannot fall behind.

use service_kit::{Env, ServiceConfig};

#[test]
fn readme_documents_every_setting_with_its_default() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut env = Env::from_pairs(Vec::<(String, String)>::new());
    let _ = api::ApiConfig::read(&mut env);
    let _ = oauth_worker::OAuthWorkerConfig::read(&mut env);
    let _ = metadata_worker::MetadataWorkerConfig::read(&mut env);
    let _ = mailer_worker::MailerWorkerConfig::read(&mut env);
    for doc in env.documented() {
        let row = format!("| `{}` | `{}` |", doc.name, doc.default.unwrap_or(""));
        assert!(
            readme.contains(&row),
            "README's configuration table lacks the row starting {row}"
        );
    }
    // Common settings are read once per service; the four services add one address each.
    assert!(env.documented().len() >= 4 * 13 + 4);
}
