//! The admin console in headless Chromium, on both backends: the admin signs in,
//! logs in as agent1 with a reason, changes a lead's stage, returns to admin, and
//! finds that change with its before and after on the audit page. Screenshots of
//! each step go to `target/console-screenshots/<backend>/`.

mod support;

use std::path::PathBuf;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use support::browser::Browser;
use support::serve::{http, login, request, start_serve};

backend_tests!(an_admin_logs_in_as_an_agent_changes_a_stage_and_finds_it_in_the_audit,);

fn screenshots(db: &TestDatabase) -> PathBuf {
    let backend = if db.url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/console-screenshots")
        .join(backend)
}

async fn an_admin_logs_in_as_an_agent_changes_a_stage_and_finds_it_in_the_audit(db: &TestDatabase) {
    let browser = match Browser::start() {
        Ok(browser) => browser,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("Browser test skipped: {why}");
            return;
        }
        Err(why) => panic!("CI needs the browser: {why}"),
    };
    let (mut server, addr, _) = start_serve(db);
    let shots = screenshots(db);
    let shot = |name: &str| browser.screenshot(&shots.join(format!("{name}.png")));

    // The pages are served by the binary.
    let (status, page) = http(&addr, "GET", "/", None);
    assert_eq!(status, 200);
    assert!(page.contains("/console/console.js"), "{page}");

    // The admin signs in.
    browser.goto(&format!("http://{addr}/"));
    browser.type_into("input[name=email]", "admin@demo.example");
    browser.type_into("input[name=password]", "demo-password");
    shot("01-sign-in");
    browser.click("form.signin button[type=submit]");
    browser.wait_for_text("main h1", "Lead Manager");
    shot("02-admin-lead-manager");

    // Users List: "Log in as user" on agent1's row, with a reason.
    browser.click("nav a[href='#/users']");
    browser.wait_for_text("main h1", "Users");
    assert!(
        browser
            .text_of("tr[data-user='owner@demo.example']")
            .lines()
            .all(|l| !l.contains("Log in as user")),
        "no button on the owner's row"
    );
    browser.click("tr[data-user='agent1@demo.example'] button");
    browser.type_into(
        "dialog textarea[name=reason]",
        "Agent asked for help with a lead",
    );
    shot("03-log-in-as-reason");
    browser.click("dialog button[type=submit]");
    let banner = browser.wait_for_text("#banner", "You are logged in as");
    assert!(banner.contains("Return to Admin"), "{banner}");
    browser.wait_for_text("main h1", "Lead Manager");
    shot("04-as-agent1-lead-manager");

    // A lead of agent1's: its stage changes.
    browser.click("main table tbody tr a");
    let before = browser
        .property("main form.grid select[name=stage]", "value")
        .as_str()
        .unwrap()
        .to_owned();
    let after = if before == "under_contract" {
        "nurture"
    } else {
        "under_contract"
    };
    browser.click(&format!("select[name=stage] option[value={after}]"));
    browser.click("main form.grid button[type=submit]");
    browser.wait_for_text("#message", "Saved.");
    assert_eq!(browser.property("select[name=stage]", "value"), after);
    shot("05-stage-changed");

    // Return to Admin.
    browser.click("#return-to-admin");
    browser.wait_for_text("main h1", "Users");
    assert!(browser.text_of("#banner").is_empty(), "the banner is gone");
    shot("06-returned-to-admin");

    // Settings: a template added, then edited in its dialog.
    browser.click("nav a[href='#/settings']");
    browser.wait_for_text("main h1", "Settings");
    browser.type_into("main form:last-of-type input[name=name]", "Follow-up");
    browser.type_into("main form:last-of-type input[name=subject]", "Checking in");
    browser.type_into(
        "main form:last-of-type textarea[name=body]",
        "Any questions?",
    );
    browser.click("main form:last-of-type button[type=submit]");
    browser.wait_for_text("#message", "Template added.");
    browser.click("main table tbody tr:last-child button.quiet");
    browser.type_into("dialog textarea[name=body]", " Call me any time.");
    browser.click("dialog button[type=submit]");
    browser.wait_for_text("#message", "Template saved.");
    browser.wait_for_text("main table", "Any questions? Call me any time.");
    shot("07-settings-template-edited");
    // An email signature, then none: an empty one saves too.
    browser.type_into("textarea[name=email_signature]", "Best, Adam");
    browser.click("main form.grid button[type=submit]");
    browser.wait_for_text("#message", "Settings saved.");
    browser.wait_for_text("main h1", "Settings");
    let signature = |token: &str| {
        let (_, body) = request(&addr, "GET", "/api/settings", Some(token), None).unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["settings"]["email_signature"]
            .clone()
    };
    let admin_token = login(&addr, "admin@demo.example");
    assert_eq!(signature(&admin_token), "Best, Adam");
    browser.clear("textarea[name=email_signature]");
    browser.click("main form.grid button[type=submit]");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while signature(&admin_token) != "" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(signature(&admin_token), "", "an empty signature saves");
    assert!(!browser.text_of("#message").contains("email_signature"));

    // The audit page: the session, and in it the change, before -> after.
    browser.click("nav a[href='#/audit']");
    browser.wait_for_text("main", "Impersonation sessions");
    let newest = browser.text_of("main table tbody tr");
    assert!(
        newest.contains("Agent asked for help with a lead") && newest.contains("returned"),
        "{newest}"
    );
    shot("08-audit-sessions");
    browser.click("main table tbody tr a");
    let changes = browser.wait_for_text("main table", "stage");
    let expected = format!("{before} → {after}");
    assert!(
        changes
            .lines()
            .any(|l| l.contains("stage") && l.contains(&expected)),
        "{expected:?} in {changes}"
    );
    shot("09-audit-session-changes");

    // The changes made while logged in as someone, field by field, on the audit page.
    browser.click("nav a[href='#/audit']");
    browser.wait_for_text("main", "Changes, field by field");
    browser.click("select[name=impersonated] option[value=true]");
    browser.click("main form.toolbar button[type=submit]");
    let filtered = browser.wait_for_text("#changes-table", &expected);
    assert!(filtered.contains("as Agnes Agent"), "{filtered}");
    assert!(
        !filtered.contains("UserCreated") && !filtered.contains("template"),
        "only impersonated changes: {filtered}"
    );
    assert!(
        !browser.text_of("main").contains("null"),
        "nothing left out shows as \"null\""
    );
    shot("10-audit-changes-impersonated");
    browser.click("main #changes-table a");

    // The same page in a narrow window.
    browser.resize(420, 860);
    browser.find("main table");
    shot("11-narrow-audit-session");

    // Logged in as agent1 again, the owner switches "Log in as user" off: the
    // admin's next step is refused (it would have been applied as the admin),
    // and the console says how it ended and shows the admin's own account.
    browser.resize(1280, 800);
    browser.click("nav a[href='#/users']");
    browser.wait_for_text("main h1", "Users");
    browser.click("tr[data-user='agent1@demo.example'] button");
    browser.type_into("dialog textarea[name=reason]", "One more look");
    browser.click("dialog button[type=submit]");
    browser.wait_for_text("#banner", "You are logged in as");
    browser.wait_for_text("main h1", "Lead Manager");
    let owner = login(&addr, "owner@demo.example");
    let (status, _) = request(
        &addr,
        "PATCH",
        "/api/site/settings",
        Some(&owner),
        Some(r#"{"impersonation_enabled": false}"#),
    )
    .unwrap();
    assert_eq!(status, 200);
    browser.click("nav a[href='#/settings']");
    let told = browser.wait_for_text("#message", "You are no longer logged in as");
    assert!(
        told.contains("revoked") && told.contains("Nothing was changed"),
        "{told}"
    );
    browser.wait_for_text("main h1", "Users");
    assert!(browser.text_of("#banner").is_empty(), "the banner is gone");
    shot("12-impersonation-ended");

    // The admin's sessions end (the owner deactivates them): the next page says so.
    let (_, listed) = request(&addr, "GET", "/api/users?limit=500", Some(&owner), None).unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let admin = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "admin@demo.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = request(
        &addr,
        "PATCH",
        &format!("/api/users/{admin}"),
        Some(&owner),
        Some(r#"{"active": false}"#),
    )
    .unwrap();
    assert_eq!(status, 200);
    browser.click("nav a[href='#/leads']");
    browser.wait_for_text("#message", "Your session has expired or was ended");
    browser.find("input[name=email]");
    shot("13-session-ended");

    assert!(server.stop());
}
