//! `crm bench` smoke run on both backends: a small history, every figure reported.
//! (Speed is judged by running the benchmark, never by assertions here.)

use std::process::Command;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;

backend_tests!(a_small_bench_run_reports_every_figure);

async fn a_small_bench_run_reports_every_figure(db: &TestDatabase) {
    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args([
            "bench",
            "--events",
            "2000",
            "--seconds",
            "1",
            "--json",
            "--database-url",
            &db.url,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for field in [
        "raw_insert_per_s",
        "command_per_s",
        "command_per_s_c16",
        "two_servers_command_per_s",
        "raw_scan_per_s",
        "rebuild_per_s",
        "write_limit_per_s",
        "audit_query_p50_ms",
        "audit_query_p99_ms",
        "lead_page_p50_ms",
        "lead_page_p99_ms",
        "http_lead_page_p99_ms",
        "past_lead_page_p99_ms",
        "peak_rss_mb",
        "command_vs_raw",
        "rebuild_vs_scan",
        "rebuild_vs_write_limit",
    ] {
        assert!(
            report[field].as_f64().is_some_and(|v| v > 0.0),
            "{field} missing or not positive in {report}"
        );
    }
    assert!(report["events"].as_i64().unwrap() >= 2000);
    // Two servers on the same leads: no failure but conflicts, no deadlock.
    assert_eq!(report["two_servers_errors"], 0, "{report}");
    assert_eq!(report["two_servers_deadlocks"], 0, "{report}");
    assert_eq!(report["backend"], db.backend());

    let again = Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args(["bench", "--events", "2000", "--database-url", &db.url])
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(2),
        "a database with events is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("fresh, empty database"));
}
