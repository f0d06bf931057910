//! The checker's integration tests, one test binary: each file in `tests/`
//! is a module here and keeps its own doc, helpers and claims (`common` is
//! the back-end process helper they share). One binary links once where one
//! per file linked six times; the tests run in parallel as before.
//!
//! Leaves out: nothing of the files' tests; only the binary they run in.

mod backend_process;
mod cli;
mod common;
mod explain_cli;
mod explore;
mod interrupt;
mod qemu;

/// In every crate of the workspace with integration tests, every file in
/// `tests/` is compiled into a test binary: a module of its
/// `tests/integration.rs`, or its own `[[test]]` target in `Cargo.toml`.
/// `autotests` is off (so that the files link once, not once each), so a
/// file in neither place would be skipped without a word; this test names it.
#[test]
fn every_file_in_tests_is_in_a_test_binary() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["checker", "model", "reference"] {
        let dir = workspace.join(krate);
        let root = std::fs::read_to_string(dir.join("tests/integration.rs")).expect("the root");
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir.join("tests")).expect("tests/") {
            let name = entry.expect("a directory entry").file_name().into_string().expect("utf-8");
            let module = name.strip_suffix(".rs").unwrap_or(&name);
            if name == "integration.rs" {
                continue;
            }
            let declared = root.lines().any(|l| l == format!("mod {module};"));
            let own_target = manifest.contains(&format!("path = \"tests/{name}\""));
            assert!(
                declared || own_target,
                "{krate}/tests/{name} is in no test binary: add `mod {module};` to \
                 {krate}/tests/integration.rs"
            );
            seen += 1;
        }
        assert!(seen > 1, "{krate}/tests/ has the files its binary declares");
    }
}
