//! Tidy checks: the code map in ARCHITECTURE.md is true (issue 13 §3), in the spirit of
//! rust-analyzer's `tidy` test. Pure file reads; no build, no network.
//!
//! - Every crate's klb dependencies are exactly the ones the `tidy:deps` table documents, so
//!   the dependency direction a reader learns from ARCHITECTURE.md is the one Cargo enforces.
//! - The control plane ↔ agent wire format lives in klb-proto alone: agent crates define no
//!   serde types except their own config file's.
//! - Every library crate documents its public items (`missing_docs`).
//! - Signals and ownership changes are syscalls, not `kill`/`chown` child processes.
//! - Test-only crates (`tempfile`, `klb-test-support`) are never a library's runtime
//!   dependency: they would ship in every binary built on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/klb sits two levels below the workspace root")
        .to_path_buf()
}

/// Crate name → its directory, for every member under `crates/`.
fn crates() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(workspace_root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        let doc: toml::Table = fs::read_to_string(&manifest).unwrap().parse().unwrap();
        let name = doc["package"]["name"].as_str().unwrap().to_owned();
        out.insert(name, dir);
    }
    out
}

/// The klb crates a manifest lists under `table` (`dependencies`, `build-dependencies`).
fn klb_deps(dir: &Path, table: &str) -> BTreeSet<String> {
    all_deps(dir, table)
        .into_iter()
        .filter(|k| k.as_str() == "klb" || k.starts_with("klb-"))
        .collect()
}

/// The `tidy:deps` table of ARCHITECTURE.md: lines `crate → dep, dep` (or `→ none`) in the
/// fenced block after the `<!-- tidy:deps -->` marker.
fn documented_deps() -> BTreeMap<String, BTreeSet<String>> {
    let text = fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    let after = text
        .split_once("<!-- tidy:deps -->")
        .expect("ARCHITECTURE.md has a `<!-- tidy:deps -->` table")
        .1;
    let block = after
        .split("```")
        .nth(1)
        .expect("a fenced block follows the tidy:deps marker");
    let mut out = BTreeMap::new();
    for line in block.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (name, deps) = line
            .split_once('→')
            .unwrap_or_else(|| panic!("tidy:deps line without `→`: {line:?}"));
        let deps: BTreeSet<String> = match deps.trim() {
            "none" => BTreeSet::new(),
            list => list.split(',').map(|d| d.trim().to_owned()).collect(),
        };
        let prev = out.insert(name.trim().to_owned(), deps);
        assert!(prev.is_none(), "crate listed twice in tidy:deps: {line:?}");
    }
    out
}

#[test]
fn documented_dependency_direction_matches_the_manifests() {
    let documented = documented_deps();
    let crates = crates();
    let mut problems = Vec::new();
    for (name, dir) in &crates {
        let mut actual = klb_deps(dir, "dependencies");
        actual.extend(klb_deps(dir, "build-dependencies"));
        match documented.get(name) {
            None => problems.push(format!(
                "{name} is missing from ARCHITECTURE.md's tidy:deps"
            )),
            Some(doc) if doc != &actual => problems.push(format!(
                "{name}: Cargo.toml depends on {actual:?}, ARCHITECTURE.md says {doc:?}"
            )),
            Some(_) => {}
        }
    }
    for name in documented.keys() {
        if !crates.contains_key(name) {
            problems.push(format!("tidy:deps lists {name}, which is not a crate"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn agent_wire_types_live_in_proto() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        if !name.starts_with("klb-agent") {
            continue;
        }
        for file in rust_files(&dir.join("src")) {
            // The agent's own config file is read with serde; it is not wire format.
            if file.file_name().is_some_and(|f| f == "config.rs") {
                continue;
            }
            let text = fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                let l = line.trim_start();
                if l.starts_with("#[derive(")
                    && (l.contains("Serialize") || l.contains("Deserialize"))
                {
                    problems.push(format!("{}:{}: {l}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "serde types in agent crates belong in klb-proto (the wire format's one home):\n{}",
        problems.join("\n")
    );
}

#[test]
fn library_crates_document_their_public_items() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        let lib = dir.join("src/lib.rs");
        if !lib.exists() {
            continue;
        }
        let text = fs::read_to_string(&lib).unwrap();
        if !text.contains("#![warn(missing_docs)]") && !text.contains("#![deny(missing_docs)]") {
            problems.push(name);
        }
    }
    assert!(
        problems.is_empty(),
        "library crates without `#![warn(missing_docs)]`: {problems:?}"
    );
}

#[test]
fn no_child_processes_for_syscalls() {
    let mut problems = Vec::new();
    for dir in crates().values() {
        // Library and binary code; tests may signal their own children as they like.
        for file in rust_files(&dir.join("src")) {
            let text = fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                // `Command::new("kill")`, `netns::run("kill", ...)`, ...: the program as the
                // first argument of a call.
                if ["(\"kill\"", "(\"chown\"", "(\"/bin/kill\""]
                    .iter()
                    .any(|p| line.contains(p))
                {
                    problems.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "use rustix (signals, chown) instead of child processes:\n{}",
        problems.join("\n")
    );
}

/// Crates only tests use; a library listing one under `[dependencies]` ships it.
const TEST_ONLY_CRATES: &[&str] = &["tempfile", "klb-test-support"];

/// Every dependency a manifest lists under `table`, klb or not.
fn all_deps(dir: &Path, table: &str) -> BTreeSet<String> {
    let doc: toml::Table = fs::read_to_string(dir.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    doc.get(table)
        .and_then(|t| t.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// What [`TEST_ONLY_CRATES`] a library crate (`src/lib.rs`) lists outside `[dev-dependencies]`.
fn test_only_runtime_deps(name: &str, dir: &Path) -> Vec<String> {
    // Binaries may use a temporary directory at run time (`klb bench reliability`), and
    // klb-test-support is itself the test helpers' home.
    if !dir.join("src/lib.rs").exists() || name == "klb-test-support" {
        return Vec::new();
    }
    let mut out = Vec::new();
    for table in ["dependencies", "build-dependencies"] {
        for dep in all_deps(dir, table) {
            if TEST_ONLY_CRATES.contains(&dep.as_str()) {
                out.push(format!("{name}: `{dep}` under [{table}]"));
            }
        }
    }
    out
}

#[test]
fn libraries_keep_test_only_crates_in_dev_dependencies() {
    let problems: Vec<String> = crates()
        .iter()
        .flat_map(|(name, dir)| test_only_runtime_deps(name, dir))
        .collect();
    assert!(
        problems.is_empty(),
        "test-only crates belong under [dev-dependencies]:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_test_only_check_sees_a_runtime_tempfile() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"klb-x\"\n[dependencies]\ntempfile = \"3\"\n\
         [dev-dependencies]\nklb-test-support = { path = \"../test-support\" }\n",
    )
    .unwrap();
    // A binary-only crate may use tempfile at run time.
    assert_eq!(
        test_only_runtime_deps("klb-x", dir.path()),
        Vec::<String>::new()
    );
    fs::write(dir.path().join("src/lib.rs"), "").unwrap();
    assert_eq!(
        test_only_runtime_deps("klb-x", dir.path()),
        vec!["klb-x: `tempfile` under [dependencies]".to_owned()]
    );
}
