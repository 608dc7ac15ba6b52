//! Compile-time behaviour of the macros: what compiles, and the errors users see when it does not.
//! Regenerate the expected errors with `TRYBUILD=overwrite cargo test --test ui`, then read each
//! `.stderr`: it must point at the user's code and name the fix.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
