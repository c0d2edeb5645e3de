//! The admin console in headless Chromium, on both backends, walked as an admin,
//! an owner and an agent would: the whole site's Lead Manager, the users list with
//! its reasons, "Log in as user" with the banner pinned, a stage change, a stale
//! edit with Reload, Return to Admin, settings and templates, the audit in plain
//! language with the chain panel, a narrow window, user management, the site's
//! rules, the agent told at sign-in and in the bell, an impersonation revoked and
//! one expired, a session ended and the return to the page after signing in
//! again. Each step leaves a screenshot in `target/console-screenshots/<backend>/`
//! and passes an accessibility check (axe-core, from `tests/console`: no serious
//! or critical violation).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::Value;
use support::browser::Browser;
use support::serve::{login, request, start_serve};

backend_tests!(an_admin_an_owner_and_an_agent_work_in_the_console,);

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

/// axe-core's source, installed by `npm ci --prefix tests/console`.
fn axe() -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/console/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(path).ok()
}

/// A JSON answer of the API.
fn call(addr: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
    let (status, text) = request(addr, method, path, Some(token), body).unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn an_admin_an_owner_and_an_agent_work_in_the_console(db: &TestDatabase) {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let browser = match Browser::start() {
        Ok(browser) => browser,
        Err(why) if !ci => {
            eprintln!("Browser test skipped: {why}");
            return;
        }
        Err(why) => panic!("CI needs the browser: {why}"),
    };
    let axe = match axe() {
        Some(source) => Some(source),
        None if !ci => {
            eprintln!(
                "Accessibility checks skipped: run `npm ci --prefix tests/console` for axe-core"
            );
            None
        }
        None => panic!("CI needs axe-core: npm ci --prefix tests/console"),
    };
    let (mut server, addr, _) = start_serve(db);
    let shots = screenshots(db);
    // Each step: a screenshot, and no serious or critical accessibility violation.
    let step = |name: &str| {
        browser.screenshot(&shots.join(format!("{name}.png")));
        if let Some(axe) = &axe {
            let violations = browser.accessibility_violations(axe);
            assert!(violations.is_empty(), "{name}: {violations:#?}");
        }
    };
    let owner = login(&addr, "owner@demo.example");

    // The admin signs in and lands on the whole site's leads, with the agents.
    browser.goto(&format!("http://{addr}/"));
    browser.type_into("input[name=email]", "admin@demo.example");
    browser.type_into("input[name=password]", "demo-password");
    step("01-sign-in");
    browser.click("form.signin button[type=submit]");
    browser.wait_for_text("main h1", "Lead Manager");
    browser.find("main thead");
    let columns = browser.property("main thead", "textContent");
    assert!(columns.as_str().unwrap().contains("Agent"), "{columns}");
    let all = browser.text_of("main .chips .chip[aria-pressed=true]");
    assert!(
        all.starts_with("All") && all.trim_start_matches("All").trim().parse::<u32>().unwrap() > 0,
        "the whole site's count: {all}"
    );
    assert!(
        browser.text_of("main .pager").contains("1–50 of "),
        "a total"
    );
    assert!(!browser.text_of("main").contains("-updated_at"));
    step("02-admin-whole-site-leads");
    // Paging on and back.
    browser.click("main .pager a[rel=next]");
    browser.wait_for_text("main .pager", "51–100 of ");
    browser.click("main .pager a[rel=next]");
    browser.wait_for_text("main .pager", "101–150 of ");
    browser.click("main .pager a[rel=prev]");
    browser.wait_for_text("main .pager", "51–100 of ");
    browser.click("main .pager a[rel=prev]");
    browser.wait_for_text("main .pager", "1–50 of ");
    assert!(!browser.text_of("main .pager").contains("Previous"));

    // Users: why a row has no "Log in as user", "(you)", a name on every button.
    browser.click("nav a[href='#/users']");
    browser.wait_for_text("main h1", "Users");
    let owner_row = browser.text_of("tr[data-user='owner@demo.example']");
    assert!(
        owner_row.contains("Only agents can be logged in as.")
            && !owner_row.contains("Log in as user"),
        "{owner_row}"
    );
    assert!(browser
        .text_of("tr[data-user='admin@demo.example']")
        .contains("(you)"));
    assert_eq!(
        browser.property(
            "tr[data-user='agent1@demo.example'] button[aria-label='Log in as user Agnes Agent']",
            "textContent"
        ),
        "Log in as user"
    );
    step("03-users");
    browser.click(
        "tr[data-user='agent1@demo.example'] button[aria-label='Log in as user Agnes Agent']",
    );
    browser.type_into(
        "dialog textarea[name=reason]",
        "Agent asked for help with a lead",
    );
    step("04-log-in-as-reason");
    browser.click("dialog button[type=submit]");
    let banner = browser.wait_for_text("#banner", "You are logged in as Agnes Agent");
    assert!(
        banner.contains("Reason: Agent asked for help with a lead")
            && banner.contains("minutes left"),
        "{banner}"
    );
    browser.wait_for_text("main h1", "Lead Manager");
    step("05-as-agent1-lead-manager");

    // A lead of agent1's: its stage changes; a note shows its author.
    browser.click("main table tbody tr a");
    browser.find("main form.grid select[name=stage]");
    let lead_path: String = browser
        .execute("return location.hash;", Value::Array(vec![]))
        .as_str()
        .unwrap()
        .trim_start_matches("#/leads/")
        .to_owned();
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
    assert!(
        !browser.text_of("main").contains("version"),
        "no version numbers"
    );
    browser.type_into("textarea[name=body]", "Asked about financing");
    browser.click("section[aria-labelledby=notes-h] button[type=submit]");
    let notes = browser.wait_for_text("section[aria-labelledby=notes-h]", "Asked about financing");
    assert!(notes.contains("Agnes Agent ·"), "the author: {notes}");
    let top = browser.execute(
        "window.scrollTo(0, document.body.scrollHeight); \
         return document.querySelector('#banner').getBoundingClientRect().top;",
        Value::Array(vec![]),
    );
    assert_eq!(top.as_f64(), Some(0.0), "the banner stays on top");
    step("06-stage-changed-note-added");
    // On a phone too, with Return to Admin in reach.
    browser.resize(390, 844);
    let top = browser.execute(
        "window.scrollTo(0, document.body.scrollHeight); \
         const b = document.querySelector('#return-to-admin').getBoundingClientRect(); \
         return [document.querySelector('#banner').getBoundingClientRect().top, b.bottom <= window.innerHeight];",
        Value::Array(vec![]),
    );
    assert_eq!(
        top[0].as_f64(),
        Some(0.0),
        "the banner stays on top at 390 px"
    );
    assert_eq!(top[1], true, "Return to Admin is on screen");
    step("06b-narrow-banner-pinned");
    browser.resize(1280, 800);

    // A stale edit: someone else changes the phone meanwhile; saving says so, shows
    // what changed, and Reload brings the latest.
    let (status, _) = call(
        &addr,
        "PATCH",
        &format!("/api/leads/{lead_path}"),
        &owner,
        Some(r#"{"phone": "+1 555 0199"}"#),
    );
    assert_eq!(status, 200);
    browser.clear("main form.grid input[name=source]");
    browser.type_into("main form.grid input[name=source]", "billboard");
    browser.click("main form.grid button[type=submit]");
    let conflict =
        browser.wait_for_text(".conflict", "Someone changed this lead since you opened it");
    assert!(conflict.contains("+1 555 0199"), "what changed: {conflict}");
    step("07-stale-edit");
    browser.click(".conflict button");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while browser.property("main form.grid input[name=phone]", "value") != "+1 555 0199" {
        assert!(
            std::time::Instant::now() < deadline,
            "Reload shows the latest phone"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Return to Admin.
    browser.click("#return-to-admin");
    browser.wait_for_text("main h1", "Users");
    assert!(browser.text_of("#banner").is_empty(), "the banner is gone");

    // "View only": the agent's account as they see it, with nothing to change.
    browser
        .click("tr[data-user='agent1@demo.example'] button[aria-label='View only as Agnes Agent']");
    browser.type_into(
        "dialog textarea[name=reason]",
        "Checking what the agent sees",
    );
    browser.click("dialog button[type=submit]");
    browser.wait_for_text(
        "#banner",
        "You are viewing Agnes Agent's account (view only)",
    );
    browser.wait_for_text("main h1", "Lead Manager");
    assert!(
        !browser.text_of("main").contains("New lead"),
        "no form to add a lead"
    );
    browser.click(&format!("main a[href='#/leads/{lead_path}']"));
    browser.wait_for_text("section[aria-labelledby=notes-h]", "Asked about financing");
    assert_eq!(
        browser.property("main form.grid select[name=stage]", "disabled"),
        true
    );
    // No button that writes is on screen (hidden ones have no box).
    let buttons = browser.execute(
        "return [...document.querySelectorAll('main button')] \
           .filter((b) => b.getClientRects().length && !b.disabled).map((b) => b.textContent);",
        Value::Array(vec![]),
    );
    assert_eq!(buttons, Value::Array(vec![]), "buttons on a view-only lead");
    step("07b-view-only-lead");
    browser.click("#return-to-admin");
    browser.wait_for_text("main h1", "Users");
    browser.click("nav a[href='#/audit']");
    browser.wait_for_text("main", "view only");

    // Settings: a template added, then edited in its dialog; a field's error next to it.
    browser.click("nav a[href='#/settings']");
    browser.wait_for_text("main h1", "Settings");
    browser.type_into(
        "form[aria-label='New template'] input[name=name]",
        "Follow-up",
    );
    browser.type_into(
        "form[aria-label='New template'] input[name=subject]",
        "Checking in",
    );
    browser.type_into(
        "form[aria-label='New template'] textarea[name=body]",
        "Any questions?",
    );
    browser.click("form[aria-label='New template'] button[type=submit]");
    browser.wait_for_text("#message", "Template added.");
    browser.click("button[aria-label='Edit Follow-up']");
    browser.type_into("dialog textarea[name=body]", " Call me any time.");
    browser.click("dialog button[type=submit]");
    browser.wait_for_text("#message", "Template saved.");
    browser.wait_for_text("main table", "Any questions? Call me any time.");
    browser.type_into(
        "form[aria-label=Settings] input[name='communication.sender_email']",
        "not an email",
    );
    browser.click("form[aria-label=Settings] button[type=submit]");
    browser.find("form[aria-label=Settings] .field-error");
    let error = browser.text_of("form[aria-label=Settings] .field-error");
    assert!(
        !error.is_empty() && !error.contains("communication.sender_email"),
        "{error}"
    );
    step("08-settings-error-next-to-field");
    browser.clear("form[aria-label=Settings] input[name='communication.sender_email']");
    // An email signature, then none: an empty one saves too.
    browser.type_into("textarea[name=email_signature]", "Best, Adam");
    browser.click("form[aria-label=Settings] button[type=submit]");
    browser.wait_for_text("#message", "Settings saved.");
    let admin_token = login(&addr, "admin@demo.example");
    let signature = || {
        call(&addr, "GET", "/api/settings", &admin_token, None).1["settings"]["email_signature"]
            .clone()
    };
    assert_eq!(signature(), "Best, Adam");
    browser.clear("textarea[name=email_signature]");
    browser.click("form[aria-label=Settings] button[type=submit]");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while signature() != "" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(signature(), "", "an empty signature saves");

    // The audit: the chain panel, the session, its changes in words.
    browser.click("nav a[href='#/audit']");
    let chain = browser.wait_for_text(".chain", "The log is intact");
    assert!(
        chain.contains("Head: position") && chain.contains("Checked"),
        "{chain}"
    );
    let viewing = browser.text_of("main table tbody tr:nth-child(1)");
    assert!(
        viewing.contains("view only") && viewing.contains("Checking what the agent sees"),
        "{viewing}"
    );
    let edited = browser.text_of("main table tbody tr:nth-child(2)");
    assert!(
        edited.contains("Agent asked for help with a lead")
            && edited.contains("returned")
            && !edited.contains("view only"),
        "{edited}"
    );
    step("09-audit");
    // The view-only session: the lead it opened, and nothing changed.
    browser.click("main table tbody tr:nth-child(1) a");
    let seen = browser.wait_for_text("main table", "Viewed the lead");
    assert!(seen.contains("Opened; nothing changed"), "{seen}");
    let facts = browser.text_of("main dl");
    assert!(
        facts.contains("View only: nothing could be changed") && facts.contains("Leads opened"),
        "{facts}"
    );
    step("09b-view-only-session");
    browser.click("main a[href='#/audit']");
    browser.wait_for_text(".chain", "The log is intact");
    browser.click("main table tbody tr:nth-child(2) a");
    let changes = browser.wait_for_text("main table", "Moved the lead");
    let expected = format!("{} → {}", before.replace('_', " "), after.replace('_', " "));
    assert!(changes.contains(&expected), "{expected:?} in {changes}");
    assert!(changes.contains("Added a note to"), "{changes}");
    assert!(
        !changes.contains("LeadStageChanged") && !changes.contains("\"id\""),
        "{changes}"
    );
    step("10-audit-session");

    // Revert this session: a reason, the plan (nothing changes), then the revert.
    browser.execute("window.confirm = () => true;", Value::Array(vec![]));
    browser.click("main .actions button.danger");
    browser.type_into(
        "dialog textarea[name=reason]",
        "Agnes asked to undo the stage change",
    );
    browser.click("dialog button[type=submit]");
    let plan = browser.wait_for_text("dialog .plan", "will be put back");
    assert!(
        plan.contains("Put back") && plan.contains("Cannot be undone"),
        "the stage goes back, the note stays: {plan}"
    );
    step("10b-revert-plan");
    browser.click("dialog button.danger");
    browser.wait_for_text("#message", "Reverted: 1 change put back.");

    // What the agent saw, from the session's page: the lead at the session's start
    // (the stage before, no note), then at its end (the stage after, the note).
    browser.wait_for_text("main h1", "Adam Admin as Agnes Agent");
    browser.click("main a.button[href^='#/then']");
    browser.wait_for_text("main h1", "What Agnes Agent saw");
    browser.wait_for_text("main", "log position");
    browser.click(&format!("main table a[href*='lead={lead_path}']"));
    let then = browser.wait_for_text(
        "main dl[aria-label='The lead then']",
        &before.replace('_', " "),
    );
    assert!(!then.contains(&after.replace('_', " ")), "{then}");
    assert!(
        !browser.text_of("main").contains("Asked about financing"),
        "no note yet at the start"
    );
    assert_eq!(
        browser.execute(
            "return document.querySelectorAll('main input:not([name=at]), main textarea, main button:not([type=submit])').length;",
            Value::Array(vec![]),
        ),
        0,
        "nothing to change in the past"
    );
    step("10c-what-the-agent-saw-at-the-start");
    browser.click("main form[aria-label=When] a:nth-of-type(2)");
    browser.wait_for_text(
        "main dl[aria-label='The lead then']",
        &after.replace('_', " "),
    );
    browser.wait_for_text("main", "Asked about financing");
    step("10d-what-the-agent-saw-at-the-end");
    browser.resize(390, 844);
    let wide = browser.execute(
        "return document.documentElement.scrollWidth > window.innerWidth;",
        Value::Array(vec![]),
    );
    assert_eq!(wide, false, "the past lead fits at 390 px");
    step("10e-narrow-what-the-agent-saw");
    browser.resize(1280, 800);

    // Changes made while logged in as someone: names, not ids; no setup rows.
    browser.click("nav a[href='#/audit']");
    browser.wait_for_text("main", "Changes, field by field");
    browser.click("select[name=impersonated] option[value=true]");
    browser.click("main form.toolbar button[type=submit]");
    let filtered = browser.wait_for_text("#changes-table", &expected);
    assert!(filtered.contains("Adam Admin as Agnes Agent"), "{filtered}");
    assert!(
        !filtered.contains("00000000") && !filtered.contains("Added the user"),
        "{filtered}"
    );
    assert!(
        !browser.text_of("main").contains("null"),
        "nothing shows as \"null\""
    );
    step("11-audit-changes-impersonated");

    // The narrow window: the session's page and the users list fit.
    browser.click("#changes-table a[title='The session']");
    browser.wait_for_text("main h1", "Adam Admin as Agnes Agent");
    browser.resize(390, 844);
    let wide = browser.execute(
        "return document.documentElement.scrollWidth > window.innerWidth;",
        Value::Array(vec![]),
    );
    assert_eq!(wide, false, "nothing sticks out at 390 px");
    step("12-narrow-audit-session");
    browser.click("nav a[href='#/users']");
    browser.wait_for_text("main h1", "Users");
    let wide = browser.execute(
        "return document.documentElement.scrollWidth > window.innerWidth;",
        Value::Array(vec![]),
    );
    assert_eq!(wide, false, "the users list fits at 390 px");
    step("13-narrow-users");
    browser.resize(1280, 800);

    // User management: add an agent, make them an auditor, deactivate them.
    browser.type_into("main form input[name=name]", "Nina Newman");
    browser.type_into("main form input[name=email]", "nina@demo.example");
    browser.type_into("main form input[name=password]", "nina-password-1");
    browser.click("main form button[type=submit]");
    browser.wait_for_text("#message", "Nina Newman was added as agent.");
    browser.click("button[aria-label='Change role of Nina Newman']");
    browser.click("dialog select[name=role] option[value=auditor]");
    browser.click("dialog button[type=submit]");
    browser.wait_for_text("#message", "Nina Newman is now auditor.");
    browser.execute("window.confirm = () => true;", Value::Array(vec![]));
    browser.click("button[aria-label='Deactivate Nina Newman']");
    let row = browser.wait_for_text("tr[data-user='nina@demo.example']", "deactivated");
    assert!(
        row.contains("auditor") && row.contains("Reactivate"),
        "{row}"
    );
    step("14-user-management");

    // The site's rules: read-only for an admin.
    browser.click("nav a[href='#/site']");
    browser.wait_for_text("main", "Only the owner can change these.");
    assert_eq!(
        browser.property("input[name=impersonation_enabled]", "disabled"),
        true
    );
    step("15-site-rules-admin");

    // Logged in as agent1 again, the owner switches "Log in as user" off: the
    // admin's next step is refused and the console says how it ended.
    browser.click("nav a[href='#/users']");
    browser.click("button[aria-label='Log in as user Agnes Agent']");
    browser.type_into("dialog textarea[name=reason]", "One more look");
    browser.click("dialog button[type=submit]");
    browser.wait_for_text("#banner", "You are logged in as");
    browser.wait_for_text("main h1", "Lead Manager");
    let (status, _) = call(
        &addr,
        "PATCH",
        "/api/site/settings",
        &owner,
        Some(r#"{"impersonation_enabled": false}"#),
    );
    assert_eq!(status, 200);
    // Even a reload: the console still says whom it acted as, and is told.
    browser.execute("location.reload();", Value::Array(vec![]));
    let told = browser.wait_for_text("#message", "You are no longer logged in as");
    assert!(
        told.contains("revoked") && told.contains("was not applied"),
        "{told}"
    );
    browser.wait_for_text("main h1", "Users");
    assert!(browser.text_of("#banner").is_empty(), "the banner is gone");
    step("16-impersonation-revoked");

    // The owner turns it back on with a one-minute limit and agents told; the
    // admin's next "Log in as" expires while the page sits there, and the console
    // notices with no click.
    let (status, _) = call(
        &addr,
        "PATCH",
        "/api/site/settings",
        &owner,
        Some(
            r#"{"impersonation_enabled": true, "impersonation_max_minutes": 1, "notify_subject_on_impersonation": true}"#,
        ),
    );
    assert_eq!(status, 200);
    browser.click("nav a[href='#/users']");
    browser.wait_for_text("main h1", "Users");
    browser.click("button[aria-label='Log in as user Agnes Agent']");
    browser.type_into("dialog textarea[name=reason]", "Quick check");
    browser.click("dialog button[type=submit]");
    browser.wait_for_text("#banner", "Less than a minute left");
    let told = browser.wait_for_text_within(
        "#message",
        "You are no longer logged in as Agnes Agent",
        Duration::from_secs(100),
    );
    assert!(told.contains("expired"), "{told}");
    assert!(browser.text_of("#banner").is_empty(), "the banner is gone");
    step("17-impersonation-expired");

    // The admin's session ends (signed out elsewhere): the next page asks to sign
    // in, and signing in again lands where they were going.
    let token = browser
        .execute(
            "return sessionStorage.getItem('crm.token');",
            Value::Array(vec![]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = call(&addr, "POST", "/api/logout", &token, Some("{}"));
    assert_eq!(status, 204);
    browser.click("nav a[href='#/audit']");
    browser.wait_for_text("#message", "Your session has expired or was ended");
    browser.type_into("input[name=email]", "admin@demo.example");
    browser.type_into("input[name=password]", "demo-password");
    step("18-session-ended");
    browser.click("form.signin button[type=submit]");
    browser.wait_for_text("main h1", "Audit");

    // The owner edits the site's rules in the console.
    browser.click("#sign-out");
    browser.type_into("input[name=email]", "owner@demo.example");
    browser.type_into("input[name=password]", "demo-password");
    browser.click("form.signin button[type=submit]");
    browser.wait_for_text("main h1", "Lead Manager");
    browser.click("nav a[href='#/site']");
    browser.wait_for_text("main h1", "Site rules");
    browser.clear("input[name=impersonation_max_minutes]");
    browser.type_into("input[name=impersonation_max_minutes]", "45");
    browser.click("main form button[type=submit]");
    browser.wait_for_text("#message", "Site rules saved.");
    let (_, rules) = call(&addr, "GET", "/api/site/settings", &owner, None);
    assert_eq!(rules["impersonation_max_minutes"], 45);
    step("19-site-rules-owner");

    // The agent signs in and is told, at once and in the bell; they mark it read.
    browser.click("#sign-out");
    browser.type_into("input[name=email]", "agent1@demo.example");
    browser.type_into("input[name=password]", "demo-password");
    browser.click("form.signin button[type=submit]");
    let told = browser.wait_for_text("#message", "new notification");
    assert!(
        told.contains("Adam Admin logged in as you: Quick check"),
        "{told}"
    );
    assert!(browser.text_of("#bell").contains("Notifications (1)"));
    step("20-agent-told-at-sign-in");
    browser.click("#bell");
    browser.wait_for_text("main h1", "Notifications");
    browser.click("main .actions button");
    browser.wait_for_text("#message", "Marked as read.");
    // The bell is drawn again once the count is read back: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while browser.text_of("#bell").contains('(') && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !browser.text_of("#bell").contains('('),
        "the bell shows none unread"
    );
    let (_, listed) = call(
        &addr,
        "GET",
        "/api/me/notifications",
        &login(&addr, "agent1@demo.example"),
        None,
    );
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["read_at"].is_string()));
    step("21-agent-notifications-read");

    // "Who logged in as me": the agent opens a session about them, and sees their
    // own screen at its start.
    browser.click("nav a[href='#/me/impersonations']");
    browser.wait_for_text("main h1", "Who logged in as me");
    browser.click("main table tbody tr a");
    browser.wait_for_text("main h1", "as Agnes Agent");
    browser.click("main a.button[href^='#/then']");
    browser.wait_for_text("main h1", "What Agnes Agent saw");
    browser.wait_for_text("main", "log position");
    step("21b-agent-own-past");
    // Before the account existed there was no screen: said in words, with the
    // ways to another moment still there.
    browser.goto(&format!("http://{addr}/#/then?at=1"));
    browser.wait_for_text("main [role=status]", "had no account yet");
    browser.find("main form[aria-label=When] input[name=at]");

    // Times show in the account's own zone, named: a task due at 9:30 in Chicago.
    let agent_token = login(&addr, "agent1@demo.example");
    let (status, _) = call(
        &addr,
        "PATCH",
        "/api/settings",
        &agent_token,
        Some(r#"{"timezone": "America/Chicago"}"#),
    );
    assert_eq!(status, 200);
    // The zone is read as the console starts: open the lead and reload.
    browser.goto(&format!("http://{addr}/#/leads/{lead_path}"));
    browser.find("input[name=due_at]");
    browser.execute("location.reload();", Value::Array(vec![]));
    std::thread::sleep(Duration::from_millis(500));
    browser.find("input[name=due_at]");
    browser.type_into("input[name=title]", "Call back");
    browser.execute(
        "document.querySelector('input[name=due_at]').value = '2027-01-15T09:30';",
        Value::Array(vec![]),
    );
    browser.click("section[aria-labelledby=tasks-h] button[type=submit]");
    let task = browser.wait_for_text("li[data-task='Call back']", "Call back");
    assert!(task.contains("9:30") && task.contains("CST"), "{task}");
    let (_, lead) = call(
        &addr,
        "GET",
        &format!("/api/leads/{lead_path}"),
        &agent_token,
        None,
    );
    let due = lead["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == "Call back")
        .unwrap()["due_at"]
        .clone();
    assert_eq!(due, "2027-01-15T15:30:00Z", "9:30 in Chicago is 15:30 UTC");
    step("22-agent-times-in-own-zone");

    assert!(server.stop());
}
