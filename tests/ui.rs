//! Compile-time behaviour of the macros: what compiles, and the errors users see when it does not.
//! Regenerate the expected errors with `TRYBUILD=overwrite cargo test --test ui`, then read each
//! `.stderr`: it must point at the user's code and name the fix.

/// Cases whose rustc output depends on the facade's features: with `web`, axum is in the crate
/// graph and rustc stops shortening `State` and `Message` to their bare names, so these cases
/// have a second expected output, in `tests/ui/fail-web/` (same sources; bless it with
/// `TRYBUILD=overwrite cargo test --features web --test ui`).
const FEATURE_DEPENDENT: [&str; 3] = [
    "argument_not_extractor",
    "first_arg_not_message",
    "future_not_send",
];

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    let mut cases: Vec<std::path::PathBuf> = std::fs::read_dir("tests/ui/fail")
        .expect("tests/ui/fail")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    cases.sort();
    for case in cases {
        let name = case
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if cfg!(feature = "web") && FEATURE_DEPENDENT.contains(&name) {
            t.compile_fail(format!("tests/ui/fail-web/{name}.rs"));
        } else {
            t.compile_fail(case);
        }
    }
}
