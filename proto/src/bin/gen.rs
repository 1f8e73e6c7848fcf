//! Regenerates `proto/schemas/*.json` and `proto/TOPICS.md` from the Rust types.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    for (name, text) in opsmesh_proto::schema::all() {
        std::fs::write(root.join("schemas").join(&name), text)?;
        println!("wrote schemas/{name}");
    }
    std::fs::write(
        root.join("TOPICS.md"),
        opsmesh_proto::topics::markdown_table(),
    )?;
    println!("wrote TOPICS.md");
    Ok(())
}
