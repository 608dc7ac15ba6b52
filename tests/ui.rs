//! Compile-time behaviour of the macros: what compiles, and the errors users see when it does not.
//! Regenerate the expected errors with `TRYBUILD=overwrite cargo test --test ui`, then read each
//! `.stderr`: it must point at the user's code and name the fix.

/// Cases whose rustc output depends on the facade's features: with every feature on, more types
/// implement `FromInvocation` and `Message` (rustc lists them), and axum in the crate graph stops
/// rustc shortening `State` and `Message` to their bare names. These cases have a second expected
/// output for `--all-features` (what `.ci/run` runs), in `tests/ui/fail-all-features/` (same
/// sources; bless it with `TRYBUILD=overwrite cargo test --all-features --test ui`). The other
/// expected outputs are for the default features; other feature sets may word these three
/// differently.
const FEATURE_DEPENDENT: [&str; 3] = [
    "argument_not_extractor",
    "first_arg_not_message",
    "future_not_send",
];

/// Whether every optional feature of the facade is on (`--all-features`).
const ALL_FEATURES: bool = cfg!(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql",
    feature = "memory",
    feature = "rabbitmq",
    feature = "nats",
    feature = "redis",
    feature = "web",
    feature = "batch",
    feature = "cdc",
    feature = "otel",
    feature = "kafka",
));

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
        if ALL_FEATURES && FEATURE_DEPENDENT.contains(&name) {
            t.compile_fail(format!("tests/ui/fail-all-features/{name}.rs"));
        } else {
            t.compile_fail(case);
        }
    }
}
