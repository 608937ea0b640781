//! Regenerates `schemas/json/*.schema.json` from the event types, removing files of events
//! that no longer exist. Run after changing any event: `cargo run -p schemas --bin write-json-schemas`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(schemas::json_schema::DIR);
    std::fs::create_dir_all(&dir)?;
    let files = schemas::json_schema::all();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.ends_with(".schema.json") && !files.iter().any(|(f, _)| *f == name) {
            std::fs::remove_file(&path)?;
            println!("removed {}", path.display());
        }
    }
    for (name, schema) in &files {
        let path = dir.join(name);
        std::fs::write(&path, schemas::json_schema::render(schema))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
