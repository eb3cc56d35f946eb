//! Issue 11's reliability suite in its short CI form: `klb bench reliability` with 50 clients
//! for 15 s per database, 2,000 fuzz cases per database and a 16 s PostgreSQL outage under
//! load (when PostgreSQL's binaries are installed, which `scripts/install-deps.sh` does; the
//! suite runs its own throwaway cluster). About 2 minutes in a debug build. The command starts
//! and stops every process itself (by PID), on loopback only; its result file is checked here
//! field by field so a regression names what broke.

use std::path::Path;
use std::process::Command;

#[test]
fn reliability_suite_short_form_passes() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("reliability.json");
    let postgres = Path::new("/usr/lib/postgresql").exists()
        || std::env::var_os("KLB_POSTGRES_BIN_DIR").is_some();
    let out = Command::new(env!("CARGO_BIN_EXE_klb"))
        .args(["bench", "reliability", "--clients", "50", "--seconds", "15"])
        .args(["--fuzz-cases", "2000", "--fuzz-seconds", "40"])
        .args(["--outage-clients", "30", "--outage-seconds", "16"])
        .args(["--postgres", if postgres { "on" } else { "auto" }])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--output")
        .arg(&output)
        .output()
        .expect("klb bench reliability runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&output).unwrap_or_else(|e| {
            panic!(
                "no result file ({e}); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        }))
        .unwrap();
    let failures = report["failures"].as_array().unwrap();
    assert!(failures.is_empty(), "{failures:#?}\n{stdout}");
    assert!(out.status.success(), "{stdout}");

    let runs = report["runs"].as_array().unwrap();
    let expected: &[&str] = if postgres {
        &["sqlite", "postgresql"]
    } else {
        println!("PostgreSQL part skipped: {}", report["postgres_skipped"]);
        &["sqlite"]
    };
    assert_eq!(runs.len(), expected.len());
    for (run, db) in runs.iter().zip(expected) {
        assert_eq!(run["database"], *db);
        let mix = &run["mix"];
        // The load did real work, and every acknowledged write was read back.
        assert!(mix["lbs_created"].as_u64().unwrap() > 50, "{db}: {mix}");
        assert!(mix["lbs_deleted"].as_u64().unwrap() > 10, "{db}: {mix}");
        assert!(mix["updates_acked"].as_u64().unwrap() > 10, "{db}: {mix}");
        assert!(
            mix["children_created"].as_u64().unwrap() > 10,
            "{db}: {mix}"
        );
        assert!(mix["verified"].as_u64().unwrap() >= mix["lbs_created"].as_u64().unwrap());
        for field in ["lost_writes", "not_deleted", "stuck_pending", "stale_reads"] {
            assert_eq!(mix[field], 0, "{db}: {field}: {mix}");
        }
        for (op, counts) in mix["ops"].as_object().unwrap() {
            assert_eq!(counts["server_error"], 0, "{db} {op}: {counts}");
            assert_eq!(counts["transport"], 0, "{db} {op}: {counts}");
        }
        let fuzz = &run["fuzz"];
        assert!(fuzz["cases"].as_u64().unwrap() >= 1000, "{db}: {fuzz}");
        for class in ["body", "query", "header", "path"] {
            let c = &fuzz["by_class"][class];
            assert!(c["client_error"].as_u64().unwrap() > 0, "{db} {class}: {c}");
            assert_eq!(c["server_error"], 0, "{db} {class}: {c}");
            assert_eq!(c["transport"], 0, "{db} {class}: {c}");
        }
        assert_eq!(run["panics"].as_array().unwrap().len(), 0, "{db}");
        assert_eq!(run["server_alive"], true, "{db}");
    }
    if postgres {
        let outage = &report["outage"];
        assert!(outage["down_s"].as_f64().unwrap() >= 16.0, "{outage}");
        assert!(
            outage["during_statuses"]["503"].as_u64().unwrap() > 0,
            "{outage}"
        );
        assert_eq!(outage["non_503_server_errors"], 0, "{outage}");
        assert!(
            outage["during_max_ms"].as_f64().unwrap() <= 15_000.0,
            "{outage}"
        );
        assert!(
            outage["recovered_after_s"].as_f64().unwrap() <= 5.0,
            "{outage}"
        );
        assert_eq!(outage["failures_after_recovery"], 0, "{outage}");
        assert_eq!(outage["mix"]["lost_writes"], 0, "{outage}");
        assert_eq!(outage["mix"]["stuck_pending"], 0, "{outage}");
        assert!(outage["mix"]["verified"].as_u64().unwrap() > 0, "{outage}");
    }
}
