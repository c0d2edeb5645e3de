// The admin console: plain JavaScript on top of the public API only. Every text
// from the server goes into the page as text (never as HTML).
"use strict";

const STAGES = ["new", "attempted_contact", "contacted", "appointment_set", "nurture",
  "under_contract", "closed", "lost"];
// [key, label, kind, choices]: "nullable" text is cleared with null, other text with "".
const SORTS = [["-updated_at", "Recently updated first"], ["updated_at", "Least recently updated first"],
  ["name", "Name"], ["next_task_due_at", "Next task due"]];
const SETTINGS = [
  ["timezone", "Time zone", "choice", () => zones()],
  ["email_signature", "Email signature", "textarea"],
  ["notifications.new_lead_email", "Email me about new leads", "bool"],
  ["notifications.task_reminder_minutes", "Task reminder (minutes before)", "number"],
  ["communication.phone_number", "Phone number", "nullable"],
  ["communication.sender_email", "Sender email", "nullable"],
  ["communication.texting_enabled", "Texting enabled", "bool"],
  ["lead_manager.default_sort", "Lead Manager default sort", "choice", () => SORTS],
];

/** The browser's list of IANA time zones (UTC first), as [value, label]. */
function zones() {
  const all = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  return [["UTC", "UTC"], ...all.filter((z) => z !== "UTC").map((z) => [z, z.replaceAll("_", " ")])];
}

const $ = (selector) => document.querySelector(selector);
const main = $("#main");
// `notice`: what to say once the next page shows (a page change clears messages).
const state = { token: sessionStorage.getItem("crm.token"), me: null, notice: null, leaving: null };

/** An element: h("a", {href: "#/x", onclick}, "text", child, [more]). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const pretty = (word) => String(word || "").replaceAll("_", " ");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const shown = (value) => (value === null || value === undefined || value === "" ? "—"
  : typeof value === "string" ? value : JSON.stringify(value));

class Problem extends Error {
  constructor(status, body) {
    super((body && body.detail) || `the server answered ${status}`);
    this.status = status;
    this.body = body || {};
    /** Already dealt with (the user was told and moved on): nothing more to say. */
    this.handled = false;
  }
}

function say(text, ok) {
  const box = $("#message");
  box.textContent = text;
  box.className = ok ? "message ok" : "message";
  box.hidden = !text;
}

/**
 * Calls the API; answers the parsed body. A dead session sends the user to sign in.
 * While showing an agent's account every request says so (Acting-As): once that
 * impersonation has ended the server refuses the request instead of applying it
 * as the admin, and the console says how it ended and returns to the admin's own
 * account.
 */
async function api(method, path, body, headers) {
  const init = { method, headers: { ...(headers || {}) } };
  if (state.token) init.headers.Authorization = `Bearer ${state.token}`;
  if (impersonating()) init.headers["Acting-As"] = state.me.user.id;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (_) {
    throw new Problem(0, { detail: "The server cannot be reached. Check your connection and try again." });
  }
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (_) { parsed = null; }
  if (response.status === 401 && state.token && path !== "/api/login") {
    forget();
    go("#/signin", "Your session has expired or was ended. Please sign in again.");
    throw new Problem(401, parsed);
  }
  if (response.status === 409 && parsed && parsed.type === "impersonation_ended") {
    const problem = new Problem(409, parsed);
    problem.handled = true;
    await back_to_own_account(parsed);
    throw problem;
  }
  if (!response.ok) throw new Problem(response.status, parsed);
  return { body: parsed, etag: response.headers.get("ETag") };
}

/**
 * The impersonation ended (expired, revoked, ...): nothing was changed; show the
 * admin's own account. Requests sent together are refused together: the first
 * refusal tells the user, the others wait for it.
 */
function back_to_own_account(ended) {
  if (!state.leaving) {
    const name = state.me ? state.me.user.name : "that user";
    state.leaving = (async () => {
      state.me = null;
      try { await load_me(); } catch (_) { return; }
      go("#/users", `You are no longer logged in as ${name}: it ended (${pretty(ended.end_reason)}) at ${when(ended.ended_at)}. `
        + "Nothing was changed. You are back in your own account.");
    })().finally(() => { state.leaving = null; });
  }
  return state.leaving;
}

function forget() {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem("crm.token");
}

/** Shows the page at `hash`, then `notice` (good news when `ok`). */
function go(hash, notice, ok) {
  state.notice = notice ? { text: notice, ok: Boolean(ok) } : null;
  if (location.hash === hash) arrive();
  else location.hash = hash;
}

function arrive() {
  const notice = state.notice;
  state.notice = null;
  say(notice ? notice.text : "", notice && notice.ok);
  route();
}

/** Runs `work`, showing its problem (and field errors) instead of failing. */
async function attempt(work, done) {
  try {
    const result = await work();
    if (done) say(done, true);
    return result;
  } catch (problem) {
    if (problem.handled || (problem.status === 401 && !state.token)) return undefined;
    const fields = (problem.body && problem.body.errors) || [];
    const detail = fields.length ? fields.map((e) => `${e.field}: ${e.message}`).join("; ") : problem.message;
    say(problem.status === 409 ? `${detail} Reload to see the latest version.` : detail);
    return undefined;
  }
}

// --- who is signed in -------------------------------------------------------

const role = () => state.me && state.me.user.role;
const impersonating = () => Boolean(state.me && state.me.impersonation);
const reads_audit = () => !impersonating() && ["owner", "admin", "auditor"].includes(role());

function chrome() {
  const me = state.me;
  $("#top").hidden = !me;
  $("#banner").hidden = !impersonating();
  if (!me) return;
  if (impersonating()) {
    $("#banner-text").textContent = `You are logged in as ${me.user.name}`;
    banner_detail();
  }
  $("#who").textContent = impersonating()
    ? `${me.actor.name} (as ${me.user.name})` : `${me.user.name} · ${me.user.role}`;
  const links = [];
  if (role() !== "auditor") links.push(["#/leads", "Lead Manager"]);
  links.push(["#/settings", "Settings"]);
  if (!impersonating() && ["owner", "admin", "auditor"].includes(role())) links.push(["#/users", "Users"]);
  if (reads_audit()) links.push(["#/audit", "Audit"]);
  if (!impersonating()) links.push(["#/me/impersonations", "Who logged in as me"]);
  const here = location.hash.split("?")[0];
  $("#nav").replaceChildren(...links.map(([href, text]) => h("a", {
    href, "aria-current": here.startsWith(href) ? "page" : null,
  }, text)));
}

/** The banner's reason and time left, kept current; at expiry the console looks again. */
function banner_detail() {
  const imp = state.me && state.me.impersonation;
  if (!imp) return;
  const left = new Date(imp.expires_at).getTime() - Date.now();
  const minutes = Math.max(0, Math.ceil(left / 60000));
  const reason = imp.reason ? `Reason: ${imp.reason}. ` : "";
  $("#banner-detail").textContent = `${reason}${minutes <= 1 ? "Less than a minute" : `${minutes} minutes`} left.`;
  if (left <= 0 && !state.leaving) {
    // Expired: the next request (with Acting-As) is told how it ended.
    api("GET", "/api/me").then(() => route()).catch(() => {});
  }
}
setInterval(banner_detail, 15000);

async function load_me() {
  const { body } = await api("GET", "/api/me");
  state.me = body;
  chrome();
}

// --- pages -------------------------------------------------------------------

// Each route gets a ticket; a page whose data arrives after a newer route started
// is not shown (a slow answer must not replace the page the user went on to).
let ticket = 0;

function page(mine, title, ...content) {
  if (mine !== ticket) return;
  document.title = `${title} · CRM`;
  // Parts a page leaves out (null: no next page, no filter) are not shown.
  main.replaceChildren(h("h1", {}, title), ...content.flat().filter((part) => part !== null && part !== undefined && part !== false));
  main.focus();
}

function signin() {
  $("#top").hidden = true;
  $("#banner").hidden = true;
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "card signin", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const { body } = await api("POST", "/api/login", { email: email.value, password: password.value });
      state.token = body.token;
      sessionStorage.setItem("crm.token", body.token);
      state.me = body.me;
      go(body.me.user.role === "auditor" ? "#/audit" : "#/leads");
    } catch (problem) {
      if (problem.status === 429) {
        say(`Too many failed sign-ins. ${problem.message}.`);
      } else if (problem.status === 401) {
        say(problem.body.detail === "this account is deactivated"
          ? "This account is deactivated." : "Wrong email or password.");
      } else say(problem.message);
    }
  } },
  h("h1", {}, "Sign in"),
  h("label", {}, "Email", email),
  h("label", {}, "Password", password),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")));
  document.title = "Sign in · CRM";
  main.replaceChildren(form);
  email.focus();
}

function table(headers, rows, empty) {
  if (!rows.length) return h("div", { class: "table-wrap" }, h("p", { class: "empty" }, empty));
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows)));
}

async function leads(params) {
  const mine = ticket;
  const query = new URLSearchParams(params);
  if (!query.get("sort")) query.set("sort", "-updated_at");
  const { body } = await api("GET", `/api/leads?${query}`);
  const set = (key, value) => {
    const next = new URLSearchParams(query);
    if (value) next.set(key, value); else next.delete(key);
    next.delete("cursor");
    go(`#/leads?${next}`);
  };
  const chips = h("div", { class: "chips", role: "group", "aria-label": "Stages" },
    h("button", { type: "button", class: "chip", "aria-pressed": String(!query.get("stage")), onclick: () => set("stage", "") }, "All"),
    STAGES.map((stage) => h("button", {
      type: "button", class: "chip", "data-stage": stage,
      "aria-pressed": String(query.get("stage") === stage), onclick: () => set("stage", stage),
    }, pretty(stage), h("span", { class: "n" }, body.counts_by_stage[stage] || 0))));
  const search = h("input", { type: "search", name: "q", value: query.get("q") || "", placeholder: "Name, email, phone" });
  const tag = h("input", { type: "text", name: "tag", value: query.get("tag") || "", placeholder: "Tag" });
  const sort = h("select", { name: "sort", onchange: () => set("sort", sort.value) },
    [["-updated_at", "Recently updated"], ["updated_at", "Least recently updated"], ["name", "Name"],
      ["next_task_due_at", "Next task due"]].map(([value, text]) =>
      h("option", { value, selected: query.get("sort") === value }, text)));
  const everyone = ["owner", "admin"].includes(role())
    ? h("label", {}, "Whose", h("select", { name: "scope", onchange: (e) => set("scope", e.target.value) },
      h("option", { value: "" }, "Mine"), h("option", { value: "site", selected: query.get("scope") === "site" }, "Whole site")))
    : null;
  const filters = h("form", { class: "toolbar", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams(query);
    for (const [key, input] of [["q", search], ["tag", tag]]) {
      if (input.value.trim()) next.set(key, input.value.trim()); else next.delete(key);
    }
    next.delete("cursor");
    go(`#/leads?${next}`);
  } },
  h("label", {}, "Search", search), h("label", {}, "Tag", tag), h("label", {}, "Sort", sort), everyone,
  h("button", { type: "submit" }, "Filter"));
  const rows = body.items.map((lead) => h("tr", { "data-lead": lead.id },
    h("td", {}, h("a", { href: `#/leads/${lead.id}` }, lead.name)),
    h("td", {}, pretty(lead.stage)),
    h("td", {}, lead.email || ""), h("td", {}, lead.phone || ""),
    h("td", {}, lead.tags.map((t) => h("span", { class: "tag" }, t))),
    h("td", {}, when(lead.next_task_due_at)), h("td", {}, when(lead.updated_at))));
  const more = body.next_cursor ? h("p", {}, h("a", { href: `#/leads?${new URLSearchParams({ ...Object.fromEntries(query), cursor: body.next_cursor })}` }, "Next page →")) : null;
  const name = h("input", { name: "name", required: true });
  const email = h("input", { name: "email", type: "email" });
  const phone = h("input", { name: "phone" });
  const create = h("form", { class: "card grid", onsubmit: async (e) => {
    e.preventDefault();
    const lead = { name: name.value };
    if (email.value) lead.email = email.value;
    if (phone.value) lead.phone = phone.value;
    const made = await attempt(() => api("POST", "/api/leads", lead));
    if (made) go(`#/leads/${made.body.id}`, "Lead created.", true);
  } }, h("label", {}, "Name", name), h("label", {}, "Email", email), h("label", {}, "Phone", phone),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Add lead")));
  page(mine, "Lead Manager", chips, filters,
    table(["Name", "Stage", "Email", "Phone", "Tags", "Next task", "Updated"], rows, "No leads match."),
    more, h("h2", {}, "New lead"), create);
}

async function lead(id) {
  const mine = ticket;
  const { body: lead, etag } = await api("GET", `/api/leads/${id}`);
  const field = (key, label, attrs) => h("label", {}, label,
    h("input", { name: key, value: lead[key] || "", ...(attrs || {}) }));
  const stage = h("select", { name: "stage" }, STAGES.map((s) => h("option", { value: s, selected: s === lead.stage }, pretty(s))));
  const form = h("form", { class: "card grid", onsubmit: async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const edit = {};
    for (const key of ["name", "email", "phone", "source"]) {
      const value = String(data.get(key) || "").trim();
      if (value !== (lead[key] || "")) edit[key] = value || null;
    }
    if (edit.name === null) delete edit.name;
    if (data.get("stage") !== lead.stage) edit.stage = data.get("stage");
    const tags = String(data.get("tags") || "").split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.join(",") !== lead.tags.join(",")) edit.tags = tags;
    if (!Object.keys(edit).length) { say("Nothing to save.", true); return; }
    const saved = await attempt(() => api("PATCH", `/api/leads/${id}`, edit, { "If-Match": etag }), "Saved.");
    if (saved) lead_again(id);
  } },
  field("name", "Name", { required: true }), field("email", "Email", { type: "email" }),
  field("phone", "Phone"), field("source", "Source"),
  h("label", {}, "Stage", stage),
  h("label", {}, "Tags (comma-separated)", h("input", { name: "tags", value: lead.tags.join(", ") })),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Save"),
    h("button", { type: "button", class: "danger", onclick: async () => {
      if (!confirm(`Archive ${lead.name}?`)) return;
      if (await attempt(() => api("DELETE", `/api/leads/${id}`, undefined, { "If-Match": etag }))) go("#/leads", "Lead archived.", true);
    } }, "Archive")));
  const note = h("textarea", { name: "body", required: true, "aria-label": "New note" });
  const notes = h("section", { class: "card" }, h("h2", {}, "Notes"),
    h("ul", { class: "plain" }, lead.notes.map((n) => h("li", {}, n.body, " ", h("span", { class: "muted" }, when(n.created_at))))),
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      if (await attempt(() => api("POST", `/api/leads/${id}/notes`, { body: note.value }), "Note added.")) lead_again(id);
    } }, note, h("div", { class: "actions" }, h("button", { type: "submit" }, "Add note"))));
  const title = h("input", { name: "title", required: true, "aria-label": "Task" });
  const due = h("input", { name: "due_at", type: "datetime-local", required: true, "aria-label": "Due" });
  const tasks = h("section", { class: "card" }, h("h2", {}, "Tasks"),
    h("ul", { class: "plain" }, lead.tasks.map((t) => h("li", {}, t.title, " · due ", when(t.due_at), " ",
      t.completed_at ? h("span", { class: "muted" }, "done")
        : h("button", { type: "button", class: "quiet", onclick: async () => {
          if (await attempt(() => api("POST", `/api/leads/${id}/tasks/${t.id}/complete`), "Task done.")) lead_again(id);
        } }, "Complete")))),
    h("form", { class: "actions", onsubmit: async (e) => {
      e.preventDefault();
      const due_at = new Date(due.value).toISOString();
      if (await attempt(() => api("POST", `/api/leads/${id}/tasks`, { title: title.value, due_at }), "Task added.")) lead_again(id);
    } }, title, due, h("button", { type: "submit" }, "Add task")));
  const channel = h("select", { name: "channel", "aria-label": "Channel" }, ["call", "email", "text"].map((c) => h("option", { value: c }, c)));
  const direction = h("select", { name: "direction", "aria-label": "Direction" }, ["outbound", "inbound"].map((d) => h("option", { value: d }, d)));
  const summary = h("input", { name: "summary", required: true, "aria-label": "Summary" });
  const comms = h("section", { class: "card" }, h("h2", {}, "Communications"),
    h("ul", { class: "plain" }, lead.communications.map((c) => h("li", {}, `${c.direction} ${c.channel}: `, c.summary, " ",
      h("span", { class: "muted" }, when(c.at || c.created_at))))),
    h("form", { class: "actions", onsubmit: async (e) => {
      e.preventDefault();
      const sent = { channel: channel.value, direction: direction.value, summary: summary.value };
      if (await attempt(() => api("POST", `/api/leads/${id}/communications`, sent), "Logged.")) lead_again(id);
    } }, channel, direction, summary, h("button", { type: "submit" }, "Log")));
  page(mine, lead.name, h("p", {}, h("a", { href: "#/leads" }, "← Lead Manager"),
    h("span", { class: "muted" }, ` · version ${lead.version} · updated ${when(lead.updated_at)}`)),
  form, h("div", { class: "two" }, notes, tasks), h("p", {}), comms);
}

function lead_again(id) { route(`#/leads/${id}`); }

async function users() {
  const mine = ticket;
  const { body } = await api("GET", "/api/users?limit=500");
  const rows = body.items.map((u) => h("tr", { "data-user": u.email },
    h("td", {}, u.name), h("td", {}, u.email), h("td", {}, u.role), h("td", {}, u.active ? "active" : "deactivated"),
    h("td", {}, u.can_impersonate
      ? h("button", { type: "button", class: "quiet", onclick: () => log_in_as(u) }, "Log in as user") : "")));
  page(mine, "Users", table(["Name", "Email", "Role", "Status", ""], rows, "No users."));
}

function log_in_as(user) {
  const dialog = $("#dialog");
  const reason = h("textarea", { name: "reason", required: true });
  dialog.replaceChildren(h("form", { method: "dialog", onsubmit: async (e) => {
    e.preventDefault();
    const started = await attempt(() => api("POST", "/api/impersonation", { user_id: user.id, reason: reason.value }));
    if (!started) { dialog.close(); return; }
    dialog.close();
    state.me = started.body;
    go("#/leads");
  } },
  h("h2", {}, `Log in as ${user.name}`),
  h("p", { class: "muted" }, "Changes you make apply to their account and are recorded with your name."),
  h("label", {}, "Reason", reason),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Log in"),
    h("button", { type: "button", class: "quiet", onclick: () => dialog.close() }, "Cancel"))));
  dialog.showModal();
  reason.focus();
}

async function return_to_admin() {
  const back = await attempt(() => api("DELETE", "/api/impersonation"));
  if (!back) return;
  state.me = back.body;
  go("#/users", "Back to your own account.", true);
}

async function settings() {
  const mine = ticket;
  const [{ body: current, etag }, { body: templates }] = await Promise.all([
    api("GET", "/api/settings"), api("GET", "/api/templates")]);
  const values = current.settings || {};
  // Auditors change nothing but their password: they see their settings, read-only.
  const readonly = role() === "auditor";
  const inputs = SETTINGS.map(([key, label, kind, choices]) => {
    const value = values[key];
    const options = kind === "choice" ? choices() : [];
    if (kind === "choice" && value && !options.some(([v]) => v === value)) options.unshift([value, value]);
    const input = kind === "bool"
      ? h("select", { name: key }, h("option", { value: "true", selected: value === true }, "yes"),
        h("option", { value: "false", selected: value === false }, "no"))
      : kind === "choice" ? h("select", { name: key },
        ...options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)))
        : kind === "textarea" ? h("textarea", { name: key }, value || "")
          : h("input", { name: key, type: kind === "number" ? "number" : "text", value: value ?? "" });
    if (readonly) input.disabled = true;
    return [key, kind, h("label", {}, label, input), input];
  });
  const form = h("form", { class: "card grid", onsubmit: async (e) => {
    e.preventDefault();
    const change = {};
    for (const [key, kind, , input] of inputs) {
      let value = input.value;
      if (kind === "bool") value = value === "true";
      else if (kind === "number") value = value === "" ? null : Number(value);
      else if (kind === "nullable") value = value.trim() === "" ? null : value;
      if ((values[key] ?? null) !== value) change[key] = value;
    }
    if (!Object.keys(change).length) { say("Nothing to save.", true); return; }
    if (await attempt(() => api("PATCH", "/api/settings", change, etag ? { "If-Match": etag } : {}), "Settings saved.")) route();
  } }, inputs.map((i) => i[2]), h("div", { class: "actions" }, h("button", { type: "submit" }, "Save settings")));
  const list = (templates.items || templates).map((t) => h("tr", {},
    h("td", {}, t.kind), h("td", {}, t.name), h("td", {}, t.subject || ""), h("td", {}, t.body),
    h("td", {}, h("div", { class: "actions" },
      h("button", { type: "button", class: "quiet", onclick: () => edit_template(t) }, "Edit"),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (confirm(`Delete the template ${t.name}?`) && await attempt(() => api("DELETE", `/api/templates/${t.id}`,
          undefined, { "If-Match": `"${t.version}"` }), "Template deleted.")) route();
      } }, "Delete")))));
  const kind = h("select", { name: "kind" }, h("option", { value: "email" }, "email"), h("option", { value: "text" }, "text"));
  const name = h("input", { name: "name", required: true });
  const subject = h("input", { name: "subject" });
  const text = h("textarea", { name: "body", required: true });
  const create = h("form", { class: "card grid", onsubmit: async (e) => {
    e.preventDefault();
    const made = { kind: kind.value, name: name.value, body: text.value };
    if (subject.value) made.subject = subject.value;
    if (await attempt(() => api("POST", "/api/templates", made), "Template added.")) route();
  } }, h("label", {}, "Kind", kind), h("label", {}, "Name", name), h("label", {}, "Subject", subject),
  h("label", {}, "Body", text), h("div", { class: "actions" }, h("button", { type: "submit" }, "Add template")));
  if (readonly) {
    const shown = (templates.items || templates).map((t) => h("tr", {},
      h("td", {}, t.kind), h("td", {}, t.name), h("td", {}, t.subject || ""), h("td", {}, t.body)));
    page(mine, "Settings", h("p", { class: "muted" }, "Auditors read their settings; only the password can be changed."),
      h("div", { class: "card grid" }, inputs.map((i) => i[2])), h("h2", {}, "Templates"),
      table(["Kind", "Name", "Subject", "Body"], shown, "No templates."));
    return;
  }
  page(mine, "Settings", form, h("h2", {}, "Templates"),
    table(["Kind", "Name", "Subject", "Body", ""], list, "No templates yet."), h("h2", {}, "New template"), create);
}

/** A template's name, subject and body, changed in a dialog (with its version). */
function edit_template(template) {
  const dialog = $("#dialog");
  const name = h("input", { name: "name", value: template.name, required: true });
  const subject = h("input", { name: "subject", value: template.subject || "" });
  const body = h("textarea", { name: "body", required: true }, template.body);
  dialog.replaceChildren(h("form", { method: "dialog", onsubmit: async (e) => {
    e.preventDefault();
    const change = {};
    if (name.value !== template.name) change.name = name.value;
    if (subject.value !== (template.subject || "")) change.subject = subject.value;
    if (body.value !== template.body) change.body = body.value;
    dialog.close();
    if (!Object.keys(change).length) return;
    const saved = await attempt(() => api("PATCH", `/api/templates/${template.id}`, change,
      { "If-Match": `"${template.version}"` }), "Template saved.");
    if (saved) route();
  } },
  h("h2", {}, `Edit ${template.kind} template`),
  h("label", {}, "Name", name),
  template.kind === "email" ? h("label", {}, "Subject", subject) : null,
  h("label", {}, "Body", body),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Save"),
    h("button", { type: "button", class: "quiet", onclick: () => dialog.close() }, "Cancel"))));
  dialog.showModal();
  name.focus();
}

function sessions_table(items) {
  return table(["Started", "Admin", "Logged in as", "Reason", "Ended", "How", "Changes"], items.map((s) =>
    h("tr", { "data-session": s.id },
      h("td", {}, h("a", { href: `#/audit/${s.id}` }, when(s.started_at))),
      h("td", {}, s.admin.name), h("td", {}, s.subject.name), h("td", {}, s.reason || ""),
      h("td", {}, s.ended_at ? when(s.ended_at) : "ongoing"), h("td", {}, pretty(s.end_reason)),
      h("td", { class: "num" }, s.change_count))), "No sessions.");
}

/** The audit export (with the changes' filters), saved as a file. */
async function download(format, filter) {
  const query = new URLSearchParams(filter);
  query.delete("limit");
  query.delete("cursor");
  query.set("format", format);
  const response = await fetch(`/api/audit/export?${query}`, { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) { say(`The export failed (${response.status}).`); return; }
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: `audit.${format === "csv" ? "csv" : "ndjson"}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function audit(params) {
  const mine = ticket;
  const query = new URLSearchParams(params);
  const filter = new URLSearchParams();
  for (const key of ["actor_id", "subject_id", "entity_type", "impersonated", "cursor"]) {
    if (query.get(key)) filter.set(key, query.get(key));
  }
  filter.set("limit", "100");
  const [{ body: sessions }, { body: verified }, { body: people }, { body: changes }] = await Promise.all([
    api("GET", "/api/audit/impersonations?limit=200"), api("GET", "/api/audit/verify"),
    api("GET", "/api/users?limit=500"), api("GET", `/api/audit/changes?${filter}`)]);
  const names = new Map(people.items.map((u) => [u.id, u.name]));
  const who = (id) => names.get(id) || id;
  const choose = (key, label, options) => h("label", {}, label, h("select", { name: key },
    h("option", { value: "" }, "any"),
    options.map(([value, text]) => h("option", { value, selected: query.get(key) === value }, text))));
  const users = people.items.map((u) => [u.id, u.name]);
  const form = h("form", { class: "toolbar", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) next.set(key, value);
    go(`#/audit?${next}`);
  } },
  choose("actor_id", "Who acted", users), choose("subject_id", "On whose account", users),
  choose("entity_type", "What", ["lead", "settings", "template", "user", "site"].map((t) => [t, t])),
  choose("impersonated", "Logged in as someone", [["true", "yes"], ["false", "no"]]),
  h("button", { type: "submit" }, "Show changes"));
  const rows = changes.items.map((c) => h("tr", {},
    h("td", {}, when(c.at)), h("td", {}, who(c.actor_id)),
    h("td", {}, c.impersonation_id ? h("a", { href: `#/audit/${c.impersonation_id}` }, `as ${who(c.subject_id)}`) : who(c.subject_id)),
    h("td", {}, c.entity_type), h("td", {}, c.field),
    h("td", {}, h("span", { class: "before" }, shown(c.before)), h("span", { class: "arrow" }, " → "),
      h("span", { class: "after" }, shown(c.after)))));
  const more = changes.next_cursor ? h("p", {}, h("a", {
    href: `#/audit?${new URLSearchParams({ ...Object.fromEntries(query), cursor: changes.next_cursor })}`,
  }, "Next page →")) : null;
  page(mine, "Audit",
    h("p", {}, verified.ok ? `The log is intact: ${verified.events_checked} events checked.`
      : `The log is broken at position ${verified.first_bad_position}.`),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "quiet", onclick: () => download("csv", filter) }, "Export CSV"),
      h("button", { type: "button", class: "quiet", onclick: () => download("ndjson", filter) }, "Export NDJSON")),
    h("h2", {}, "Impersonation sessions"), sessions_table(sessions.items),
    h("h2", { id: "changes" }, "Changes, field by field"), form,
    h("div", { id: "changes-table" },
      table(["At", "Who acted", "On whose account", "What", "Field", "Before → after"], rows, "No changes match.")),
    more);
}

async function session(id) {
  const mine = ticket;
  const { body: s } = await api("GET", `/api/audit/impersonations/${id}`);
  const rows = s.changes.map((c) => h("tr", {},
    h("td", {}, when(c.at)), h("td", {}, pretty(c.event_type)), h("td", {}, `${c.entity_type}`),
    h("td", {}, c.field),
    h("td", { class: "change" }, h("span", { class: "before" }, shown(c.before)), h("span", { class: "arrow" }, " → "),
      h("span", { class: "after" }, shown(c.after)))));
  page(mine, `${s.admin.name} as ${s.subject.name}`,
    h("p", {}, h("a", { href: reads_audit() ? "#/audit" : "#/me/impersonations" }, "← Sessions")),
    h("p", {}, `Reason: ${s.reason || "—"} · started ${when(s.started_at)} · `,
      s.ended_at ? `ended ${when(s.ended_at)} (${pretty(s.end_reason)})` : "ongoing"),
    table(["At", "What", "On", "Field", "Before → after"], rows, "Nothing was changed in this session."));
}

async function my_impersonations() {
  const mine = ticket;
  const { body } = await api("GET", "/api/me/impersonations?limit=200");
  page(mine, "Who logged in as me", sessions_table(body.items));
}

// --- routing -------------------------------------------------------------------

async function route(forced) {
  const hash = forced || location.hash || "#/";
  const [path, search] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  ticket += 1;
  const mine = ticket;
  if (!state.token) { signin(); return; }
  try {
    if (!state.me) await load_me();
    chrome();
    if (parts[0] === "leads" && parts[1]) await lead(parts[1]);
    else if (parts[0] === "leads") await leads(new URLSearchParams(search || ""));
    else if (parts[0] === "users") await users();
    else if (parts[0] === "settings") await settings();
    else if (parts[0] === "audit" && parts[1]) await session(parts[1]);
    else if (parts[0] === "audit") await audit(new URLSearchParams(search || ""));
    else if (parts[0] === "me") await my_impersonations();
    else go(role() === "auditor" ? "#/audit" : "#/leads");
  } catch (problem) {
    if (problem.handled || problem.status === 401 || mine !== ticket) return;
    if (problem.status === 403) say(`Not allowed: ${problem.message}.`);
    else if (problem.status === 404) say("Not found: it does not exist, or it is not yours to see.");
    else say(problem.message);
    main.replaceChildren();
  }
}

$("#return-to-admin").addEventListener("click", return_to_admin);
$("#sign-out").addEventListener("click", async () => {
  await attempt(() => api("POST", "/api/logout"));
  forget();
  go("#/signin", "Signed out.", true);
});
window.addEventListener("hashchange", arrive);
route();
