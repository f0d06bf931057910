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
/// `tests/` is compiled into a test binary: a `[[test]]` target of its own in
/// `Cargo.toml` (`tests/integration.rs`, `proofs`' two suites, ...), or a
/// module such a target declares. `autotests` is off (so that the files link
/// once, not once each), so a file in neither place would be skipped without
/// a word; this test names it.
#[test]
fn every_file_in_tests_is_in_a_test_binary() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["checker", "model", "reference", "proofs"] {
        let dir = workspace.join(krate);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains("autotests = false"), "{krate} lists its test targets");
        let targets: Vec<String> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("path = \"tests/")?.strip_suffix(".rs\""))
            .map(str::to_string)
            .collect();
        let roots: Vec<String> = targets
            .iter()
            .map(|t| std::fs::read_to_string(dir.join(format!("tests/{t}.rs"))).expect("a root"))
            .collect();
        let mut seen = 0;
        for entry in std::fs::read_dir(dir.join("tests")).expect("tests/") {
            let name = entry.expect("a directory entry").file_name().into_string().expect("utf-8");
            let module = name.strip_suffix(".rs").unwrap_or(&name);
            let own_target = targets.iter().any(|t| t == module);
            let declared = roots.iter().any(|r| r.lines().any(|l| l == format!("mod {module};")));
            assert!(
                declared || own_target,
                "{krate}/tests/{name} is in no test binary: declare `mod {module};` in one of \
                 {krate}'s test targets ({targets:?})"
            );
            seen += 1;
        }
        assert!(seen > targets.len(), "{krate}/tests/ has the files its binaries declare");
    }
}
