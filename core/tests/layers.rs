//! The layers of `herald-core` import downward only: `model` → `contract` and `ports` → `engine` →
//! `durable` (see `docs/ARCHITECTURE.md`). This test reads the sources and fails on any `crate::`
//! path from a layer to a higher one, to a sibling (`contract` and `ports` know only `model`), or to
//! the crate root (which re-exports every layer, so naming it would hide the real dependency).

use std::fs;
use std::path::{Path, PathBuf};

/// Each layer and its rank; a layer may import its own modules and those of lower ranks.
const LAYERS: [(&str, u8); 5] = [
    ("model", 0),
    ("contract", 1),
    ("ports", 1),
    ("engine", 2),
    ("durable", 3),
];

fn rank(layer: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == layer)
        .map(|(_, rank)| *rank)
}

fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

/// The `crate::<first segment>` paths of a line's code (comments cut off).
fn crate_paths(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `crate::` itself, not the end of another identifier (`$crate::`, `my_crate::`).
            !code[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })
        .map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

fn violations() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&root).expect("under src");
        let layer = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        // lib.rs and private.rs are the facade: they may name every layer.
        let Some(own) = rank(layer) else { continue };
        let text = fs::read_to_string(&file).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            for target in crate_paths(line) {
                let allowed = match rank(target) {
                    Some(other) => target == layer || other < own,
                    None => false,
                };
                if !allowed {
                    found.push(format!(
                        "{}:{}: layer `{layer}` names `crate::{target}`: {}",
                        relative.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn layers_import_downward_only() {
    let found = violations();
    assert!(
        found.is_empty(),
        "imports against the layer order (model → contract, ports → engine → durable); move the item \
         down a layer or depend on a port instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    assert_eq!(
        crate_paths("use crate::engine::runtime::Herald; // crate::durable"),
        ["engine"]
    );
    assert_eq!(
        crate_paths("$crate::model::x + my_crate::y"),
        Vec::<&str>::new()
    );
}
