//! Lists and exports at size, on both backends: an export of more than three
//! pages of 1,000 rows holds exactly the changes the list gives, page by page, in
//! the same order; a limit above 500 is clamped to 500 (the contract's maximum);
//! paging the Lead Manager by `-updated_at` while leads are edited never lists a
//! lead twice and lists every lead nobody touched meanwhile.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::demo;

backend_tests!(
    an_export_of_four_pages_equals_the_list_and_limits_are_clamped,
    paging_by_recent_update_while_leads_change_skips_and_repeats_nothing,
);

async fn an_export_of_four_pages_equals_the_list_and_limits_are_clamped(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    // Each lead's creation is four changes (name, email, stage, tags): with the
    // site's setup, over 3,000 rows.
    for i in 0..800 {
        support::lead_of(&api.app, &s.agent1.ctx, &format!("Lead {i:04}")).await;
    }
    let auditor = api.login("auditor@demo.example").await;

    let mut listed: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/audit/changes?order=asc&limit=500".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api.get(&auditor, &path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 500);
        listed.extend(items.iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert!(listed.len() > 3_000, "{} changes", listed.len());

    let export = api.get(&auditor, "/api/audit/export?format=ndjson").await;
    assert_eq!(export.status, 200);
    let exported: Vec<Value> = String::from_utf8(export.raw)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), listed.len());
    assert!(exported == listed, "the export is the list, row for row");
    let keys: BTreeSet<(i64, String, String)> = listed
        .iter()
        .map(|c| {
            (
                c["position"].as_i64().unwrap(),
                c["field"].as_str().unwrap().to_owned(),
                c["entity_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(keys.len(), listed.len(), "no change twice");

    // Above the maximum: 500, and a next page.
    for path in ["/api/audit/changes?limit=1000", "/api/leads?limit=100000"] {
        let token = if path.starts_with("/api/leads") {
            api.login("agent1@demo.example").await
        } else {
            auditor.clone()
        };
        let page = api.get(&token, path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_eq!(page.body["items"].as_array().unwrap().len(), 500, "{path}");
        assert!(page.body["next_cursor"].is_string(), "{path}");
    }
}

async fn paging_by_recent_update_while_leads_change_skips_and_repeats_nothing(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let mut all = Vec::new();
    for i in 0..120 {
        all.push(
            api.post(
                &agent,
                "/api/leads",
                json!({"name": format!("Paged {i:03}")}),
            )
            .await
            .id(),
        );
    }
    // Page by most recently updated, 10 a page; after each page, edit one lead
    // not seen yet and one already seen.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let mut path = "/api/leads?sort=-updated_at&limit=10&q=Paged".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api.get(&agent, &path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for lead in page.body["items"].as_array().unwrap() {
            *seen
                .entry(lead["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        let unseen = all
            .iter()
            .find(|id| !seen.contains_key(*id) && !touched.contains(*id));
        let old = seen.keys().next().cloned();
        for id in unseen.cloned().into_iter().chain(old) {
            let edited = api
                .patch(
                    &agent,
                    &format!("/api/leads/{id}"),
                    json!({"source": format!("round {round}")}),
                    None,
                )
                .await;
            assert_eq!(edited.status, 200, "{}", edited.body);
            touched.insert(id);
        }
        round += 1;
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(twice.is_empty(), "listed twice: {twice:?}");
    let missed: Vec<&String> = all
        .iter()
        .filter(|id| !touched.contains(*id) && !seen.contains_key(*id))
        .collect();
    assert!(missed.is_empty(), "untouched leads missed: {missed:?}");
    assert!(touched.len() > 10, "leads were edited while paging");
}
