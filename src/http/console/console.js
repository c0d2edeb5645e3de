// The admin console: plain JavaScript on top of the public API only. Every text
// from the server goes into the page as text (never as HTML).
"use strict";

const STAGES = ["new", "attempted_contact", "contacted", "appointment_set", "nurture",
  "under_contract", "closed", "lost"];
const SORTS = [["-updated_at", "Recently updated first"], ["updated_at", "Least recently updated first"],
  ["name", "Name"], ["next_task_due_at", "Next task due"]];
// [key, label, kind, choices]: "nullable" text is cleared with null, other text with "".
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
const SITE_RULES = [
  ["impersonation_enabled", "Admins may log in as agents", "bool"],
  ["impersonation_max_minutes", "Time limit (minutes)", "number"],
  ["impersonation_reason_required", "A reason is required", "bool"],
  ["notify_subject_on_impersonation", "Tell the agent when someone logs in as them", "bool"],
];
const ROLES = ["owner", "admin", "agent", "auditor"];

/** The browser's list of IANA time zones (UTC first), as [value, label]. */
function zones() {
  const all = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  return [["UTC", "UTC"], ...all.filter((z) => z !== "UTC").map((z) => [z, z.replaceAll("_", " ")])];
}

const $ = (selector) => document.querySelector(selector);
const main = $("#main");
// `notice`: what to say once the next page shows (a page change clears messages).
// `tz`: the time zone of the account shown (its own setting), in which every time
// is shown and entered. `people`: the site's users by id, for names.
const state = {
  token: sessionStorage.getItem("crm.token"), me: null, notice: null, leaving: null,
  tz: null, people: new Map(), unread: [],
};

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
const plural = (n, one, many) => `${n} ${n === 1 ? one : many || `${one}s`}`;

// --- times, in the account's own time zone ---------------------------------

// An auditor changes no setting: the zone they read in is kept in this browser.
const zone = () => (role() === "auditor" && localStorage.getItem(`crm.zone.${me_id()}`))
  || state.tz || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function formatter(options) {
  try {
    return new Intl.DateTimeFormat(undefined, { ...options, timeZone: zone() });
  } catch (_) {
    return new Intl.DateTimeFormat(undefined, { ...options, timeZone: "UTC" });
  }
}

/** A moment as the account's clock shows it, with the zone named ("Dec 5, 2026, 9:30 AM CST"),
 * to the second when asked (the audit). */
function when(iso, seconds) {
  if (!iso) return "";
  return formatter({
    year: "numeric", month: "short", day: "numeric", hour: "numeric", minute: "2-digit",
    second: seconds ? "2-digit" : undefined, timeZoneName: "short",
  }).format(new Date(iso));
}

/** How far the zone's clock is ahead of UTC at `ms`, in milliseconds. */
function offset_at(ms) {
  const parts = Object.fromEntries(formatter({
    hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
  const clock = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour % 24, +parts.minute, +parts.second);
  return clock - Math.floor(ms / 1000) * 1000;
}

/** A wall time typed in the account's zone ("2026-12-05T09:30") as an RFC 3339 instant. */
function zoned(local) {
  const [day, time = "00:00"] = local.split("T");
  const [y, m, d] = day.split("-").map(Number);
  const [hh, mm, ss = 0] = time.split(":").map(Number);
  const clock = Date.UTC(y, m - 1, d, hh, mm, ss);
  let ms = clock - offset_at(clock);
  ms = clock - offset_at(ms);
  return new Date(ms).toISOString();
}

/** An instant as the account's clock shows it, for a datetime-local input
 * ("2026-12-05T09:30:12"). */
function wall(iso) {
  const ms = new Date(iso).getTime();
  return new Date(ms + offset_at(ms)).toISOString().slice(0, 19);
}

/** The day after "2026-12-05", as "2026-12-06". */
function next_day(day) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + 1)).toISOString().slice(0, 10);
}

// --- talking to the server ---------------------------------------------------

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
  box.replaceChildren(...(Array.isArray(text) ? text : [text || ""]));
  box.className = ok ? "message ok" : "message";
  box.hidden = !text || (Array.isArray(text) && !text.length);
}

/**
 * Calls the API; answers the parsed body. A dead session sends the user to sign in
 * (and back to this page afterwards). While showing an agent's account every
 * request says so (Acting-As): once that impersonation has ended the server
 * refuses the request instead of applying it as the admin, and the console says
 * how it ended and returns to the admin's own account.
 */
async function api(method, path, body, headers) {
  const init = { method, headers: { ...(headers || {}) } };
  if (state.token) init.headers.Authorization = `Bearer ${state.token}`;
  // After a reload the console does not know yet whom it showed: it says whom it
  // acted as before, so an impersonation that ended meanwhile is told, never
  // silently replaced by the admin's own account.
  const acting = impersonating() ? state.me.user.id : (!state.me && sessionStorage.getItem("crm.acting"));
  if (acting) init.headers["Acting-As"] = acting;
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
    sessionStorage.setItem("crm.return", location.hash);
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
      sessionStorage.removeItem("crm.acting");
      try { await load_me(); } catch (_) { return; }
      go("#/users", `You are no longer logged in as ${name}: it ended (${pretty(ended.end_reason)}) at ${when(ended.ended_at, true)}. `
        + "Your last step was not applied; what you changed before that stays, as the audit shows. You are back in your own account.");
    })().finally(() => { state.leaving = null; });
  }
  return state.leaving;
}

function forget() {
  state.token = null;
  state.me = null;
  state.people = new Map();
  sessionStorage.removeItem("crm.token");
  sessionStorage.removeItem("crm.acting");
}

/** Who the console shows now; remembered for a reload (see `api`). */
function set_me(me) {
  state.me = me;
  if (me && me.impersonation) sessionStorage.setItem("crm.acting", me.user.id);
  else sessionStorage.removeItem("crm.acting");
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
  window.scrollTo(0, 0);
  route();
}

/**
 * Runs `work`, showing its problem instead of failing: each field's error next to
 * its field in `form` (when it has one), the rest above the page.
 */
async function attempt(work, done, form) {
  if (form) clear_errors(form);
  try {
    const result = await work();
    if (done) say(done, true);
    return result;
  } catch (problem) {
    if (problem.handled || (problem.status === 401 && !state.token)) return undefined;
    const fields = (problem.body && problem.body.errors) || [];
    const left = fields.filter((e) => !(form && field_error(form, e.field, e.message)));
    const detail = fields.length
      ? left.map((e) => sentence(e.message)).join(" ") || "Please correct the fields marked below."
      : sentence(problem.message);
    // Erased meanwhile (in another tab, by someone else): show what is left of it.
    if (problem.status === 410) {
      go(location.hash, detail);
      return undefined;
    }
    // A stale version: someone changed it meanwhile; offer the latest.
    if (problem.status === 409 && /stale|version|changed meanwhile/i.test(detail)) {
      say([`${detail} Someone changed it since this page was shown. `,
        h("button", { type: "button", class: "quiet", onclick: () => arrive() }, "Reload")]);
    } else say(detail);
    return undefined;
  }
}

/** A message as a sentence: a capital first letter (not of an email or a name
 * quoted from the data), a full stop. */
const sentence = (text) => {
  const t = String(text || "").trim();
  if (!t) return "";
  const first = t.split(/\s/)[0];
  const start = /^[a-z]+$/.test(first) ? `${t[0].toUpperCase()}${t.slice(1)}` : t;
  return `${start}${/[.!?]$/.test(t) ? "" : "."}`;
};

/** Shows `message` under the field named `name` in `form`; false when there is none. */
function field_error(form, name, message) {
  const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
  if (!input) return false;
  const id = `error-${name.replace(/[^a-z0-9]/gi, "-")}`;
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", id);
  input.closest("label").append(h("span", { class: "field-error", id }, sentence(message)));
  if (!form.querySelector("[aria-invalid=true]:focus")) input.focus();
  return true;
}

function clear_errors(form) {
  form.querySelectorAll(".field-error").forEach((e) => e.remove());
  form.querySelectorAll("[aria-invalid]").forEach((e) => {
    e.removeAttribute("aria-invalid");
    e.removeAttribute("aria-describedby");
  });
}

// --- who is signed in -------------------------------------------------------

const role = () => state.me && state.me.user.role;
const impersonating = () => Boolean(state.me && state.me.impersonation);
/** Logged in as someone in "View only" mode: the server refuses every write. */
const viewing = () => impersonating() && state.me.impersonation.mode === "view";

/** In a view-only session a form that changes something shows what it holds,
 * disabled and without its buttons; one that only adds something (`adds`) is not
 * shown at all. */
function writes(form, adds) {
  if (!form || !viewing()) return form;
  if (adds) return null;
  form.querySelectorAll("input, select, textarea, button").forEach((el) => { el.disabled = true; });
  form.querySelectorAll(".actions").forEach((el) => { el.hidden = true; });
  return form;
}
const manages = () => !impersonating() && ["owner", "admin"].includes(role());
const reads_audit = () => !impersonating() && ["owner", "admin", "auditor"].includes(role());
const me_id = () => state.me && state.me.actor.id;

function chrome() {
  const me = state.me;
  $("#top").hidden = !me;
  $("#banner").hidden = !impersonating();
  if (!me) return;
  if (impersonating()) {
    $("#banner-text").textContent = viewing()
      ? `You are viewing ${me.user.name}'s account (view only)` : `You are logged in as ${me.user.name}`;
    banner_detail();
    // At the moment it expires (the server records the end within a second),
    // look again: the console says so with no click.
    clearTimeout(state.expiry);
    const left = new Date(me.impersonation.expires_at).getTime() - Date.now();
    state.expiry = setTimeout(() => {
      if (impersonating() && !state.leaving) api("GET", "/api/me").catch(() => {});
    }, Math.max(0, left) + 1500);
  }
  $("#who").textContent = impersonating()
    ? `${me.actor.name} (as ${me.user.name})` : `${me.user.name} · ${me.user.role}`;
  const links = [];
  if (role() !== "auditor") links.push(["#/leads", "Lead Manager"]);
  if (role() !== "auditor") links.push(["#/settings", "Settings"]);
  if (!impersonating() && ["owner", "admin", "auditor"].includes(role())) links.push(["#/users", "Users"]);
  if (manages()) links.push(["#/site", "Site rules"]);
  if (reads_audit()) links.push(["#/audit", "Audit"]);
  // Only agents can be logged in as.
  if (!impersonating() && role() === "agent") links.push(["#/me/impersonations", "Who logged in as me"]);
  if (!impersonating()) links.push(["#/account", "Account"]);
  const here = location.hash.split("?")[0];
  // The page shown, clicked again, is shown afresh.
  $("#nav").replaceChildren(...links.map(([href, text]) => h("a", {
    href, "aria-current": here === href || here.startsWith(`${href}/`) ? "page" : null,
    onclick: (e) => { if (location.hash === href) { e.preventDefault(); arrive(); } },
  }, text)));
  bell();
}

/** The notifications bell, with the number not yet read. */
function bell() {
  const count = state.unread.length;
  const button = $("#bell");
  button.textContent = count ? `Notifications (${count})` : "Notifications";
  button.setAttribute("aria-label", count ? `Notifications: ${plural(count, "unread")}` : "Notifications: none unread");
  button.classList.toggle("has-unread", count > 0);
}

async function load_notifications() {
  const { body } = await api("GET", "/api/me/notifications?limit=50");
  state.unread = body.items.filter((n) => !n.read_at);
  bell();
  return body.items;
}

/** The banner's reason and time left, kept current; at expiry the console looks again. */
function banner_detail() {
  const imp = state.me && state.me.impersonation;
  if (!imp) return;
  const left = new Date(imp.expires_at).getTime() - Date.now();
  const minutes = Math.max(0, Math.ceil(left / 60000));
  const reason = imp.reason ? `Reason: ${imp.reason}. ` : "";
  $("#banner-detail").textContent = reason;
  $("#banner-detail").title = imp.reason || "";
  $("#banner-left").textContent = `${minutes <= 1 ? "Less than a minute" : `${minutes} minutes`} left.`;
  if (left <= 0 && !state.leaving) {
    // Expired: the next request (with Acting-As) is told how it ended.
    api("GET", "/api/me").then(() => route()).catch(() => {});
  }
}

// While logged in as someone, look every 15 seconds whether it still holds (it
// may be revoked, or end by time, with no page change); the request carries
// Acting-As, so an ending is told in words.
let ticks = 0;
setInterval(() => {
  ticks += 1;
  if (!state.me || state.leaving) return;
  if (impersonating()) {
    banner_detail();
    api("GET", "/api/me").catch(() => {});
  } else if (ticks % 4 === 0) {
    // The bell, once a minute.
    load_notifications().catch(() => {});
  }
}, 15000);

async function load_me() {
  const { body } = await api("GET", "/api/me");
  set_me(body);
  await load_zone();
  chrome();
  load_notifications().catch(() => {});
}

/** The time zone of the account shown (the agent's, while logged in as them). */
async function load_zone() {
  try {
    const { body } = await api("GET", "/api/settings");
    state.tz = (body.settings && body.settings.timezone) || null;
  } catch (problem) {
    if (problem.handled) throw problem;
    state.tz = null;
  }
}

/** The site's users by id (owners, admins and auditors may list them). */
async function load_people() {
  if (!["owner", "admin", "auditor"].includes(role()) || impersonating()) return state.people;
  const { body } = await api("GET", "/api/users?limit=500");
  state.people = new Map(body.items.map((u) => [u.id, u]));
  return state.people;
}

const person = (id) => (state.people.get(id) || {}).name || (id ? "someone no longer listed" : "—");

// --- pages -------------------------------------------------------------------

// Each route gets a ticket; a page whose data arrives after a newer route started
// is not shown (a slow answer must not replace the page the user went on to).
let ticket = 0;

function page(mine, title, ...content) {
  if (mine !== ticket) return;
  document.title = `${title} · CRM`;
  busy(false);
  // Parts a page leaves out (null: no next page, no filter) are not shown.
  main.replaceChildren(h("h1", {}, title), ...content.flat().filter((part) => part !== null && part !== undefined && part !== false));
  main.focus({ preventScroll: true });
}

/** The loading bar, and the old page dimmed, while a page is on its way. */
function busy(on) {
  $("#loading").hidden = !on;
  main.setAttribute("aria-busy", on ? "true" : "false");
  main.classList.toggle("stale", on);
}

function signin() {
  $("#top").hidden = true;
  $("#banner").hidden = true;
  busy(false);
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "card signin", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const { body } = await api("POST", "/api/login", { email: email.value, password: password.value });
      state.token = body.token;
      sessionStorage.setItem("crm.token", body.token);
      set_me(body.me);
      await load_zone();
      const back = sessionStorage.getItem("crm.return");
      sessionStorage.removeItem("crm.return");
      const items = await load_notifications().catch(() => []);
      const fresh = items.filter((n) => !n.read_at);
      go(back && back !== "#/signin" ? back : landing(), fresh.length ? told(fresh) : null, true);
    } catch (problem) {
      if (problem.status === 429) {
        say(`Too many failed sign-ins. ${sentence(problem.message)}`);
      } else if (problem.status === 401) {
        say(problem.body.detail === "this account is deactivated"
          ? "This account is deactivated." : "Wrong email or password.");
      } else say(sentence(problem.message));
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

/** Where each role starts: auditors on the audit, owners and admins on the whole site's leads. */
function landing() {
  if (role() === "auditor") return "#/audit";
  return "#/leads";
}

/** The notices not yet read, as shown at sign-in. */
function told(fresh) {
  return `${plural(fresh.length, "new notification")}: ${fresh.map((n) => `${n.text} (${when(n.created_at)})`).join("; ")}. `
    + "See Notifications to mark them read.";
}

/** A table whose cells are labelled with their column (so narrow screens show cards). */
function table(caption, headers, rows, empty) {
  if (!rows.length) return h("p", { class: "empty card" }, empty);
  for (const row of rows) {
    [...row.children].forEach((cell, i) => { if (headers[i]) cell.dataset.label = headers[i]; });
  }
  return h("div", { class: "table-wrap", role: "region", "aria-label": caption, tabindex: "0" },
    h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
      h("tbody", {}, rows)));
}

/**
 * "Previous" and "Next" for a cursor-paged list: the cursors of the pages before
 * travel in the address (`trail`), so Previous works after a reload too.
 */
function pager(base, query, next_cursor, shown, total, keys) {
  // The cursor of each page before this one; "-" is the first page's (none).
  const cursor_key = (keys && keys.cursor) || "cursor";
  const trail_key = (keys && keys.trail) || "trail";
  const trail = query.get(trail_key) ? query.get(trail_key).split(".") : [];
  const number = trail.length + 1;
  const at = (cursor, next_trail) => {
    const next = new URLSearchParams(query);
    if (cursor && cursor !== "-") next.set(cursor_key, cursor); else next.delete(cursor_key);
    if (next_trail.length) next.set(trail_key, next_trail.join(".")); else next.delete(trail_key);
    return `${base}?${next}`;
  };
  const previous = number > 1
    ? h("a", { href: at(trail[trail.length - 1], trail.slice(0, -1)), rel: "prev" }, "← Previous") : null;
  const next = next_cursor
    ? h("a", { href: at(next_cursor, [...trail, query.get(cursor_key) || "-"]), rel: "next" }, "Next →") : null;
  const size = Number(query.get("limit")) || 50;
  const first = (number - 1) * size + 1;
  const range = shown ? `${first}–${first + shown - 1}` : "0";
  return h("nav", { class: "pager", "aria-label": "Pages" }, previous,
    h("span", { class: "muted" }, total === undefined ? `Page ${number}` : `${range} of ${total}`), next);
}

// --- Lead Manager --------------------------------------------------------------

async function leads(params) {
  const mine = ticket;
  const query = new URLSearchParams(params);
  // Owners and admins see the whole site unless they ask for their own.
  const whole = manages() && query.get("whose") !== "mine";
  const asked = new URLSearchParams();
  for (const key of ["stage", "tag", "q", "cursor"]) if (query.get(key)) asked.set(key, query.get(key));
  asked.set("sort", query.get("sort") || "-updated_at");
  if (whole) asked.set("scope", "site");
  const [{ body }] = await Promise.all([api("GET", `/api/leads?${asked}`), whole ? load_people() : null]);
  const set = (key, value) => {
    const next = new URLSearchParams(query);
    if (value) next.set(key, value); else next.delete(key);
    next.delete("cursor");
    next.delete("trail");
    go(`#/leads?${next}`);
  };
  const counts = body.counts_by_stage;
  const all = Object.values(counts).reduce((a, b) => a + b, 0);
  const chips = h("div", { class: "chips", role: "group", "aria-label": "Stages" },
    h("button", { type: "button", class: "chip", "aria-pressed": String(!query.get("stage")), onclick: () => set("stage", "") },
      "All", h("span", { class: "n" }, all)),
    STAGES.map((stage) => h("button", {
      type: "button", class: "chip", "data-stage": stage,
      "aria-pressed": String(query.get("stage") === stage), onclick: () => set("stage", stage),
    }, pretty(stage), h("span", { class: "n" }, counts[stage] || 0))));
  const search = h("input", { type: "search", name: "q", value: query.get("q") || "", placeholder: "Name, email, phone" });
  const tag = h("input", { type: "text", name: "tag", value: query.get("tag") || "", placeholder: "Tag" });
  const sort = h("select", { name: "sort" },
    SORTS.map(([value, text]) => h("option", { value, selected: (query.get("sort") || "-updated_at") === value }, text)));
  const whose = manages()
    ? h("label", {}, "Whose", h("select", { name: "whose" },
      h("option", { value: "site", selected: whole }, "Whole site"), h("option", { value: "mine", selected: !whole }, "Mine")))
    : null;
  const filters = h("form", { class: "toolbar", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams(query);
    for (const [key, input] of [["q", search], ["tag", tag], ["sort", sort]]) {
      if (input.value.trim()) next.set(key, input.value.trim()); else next.delete(key);
    }
    const chosen = filters.querySelector("select[name=whose]");
    if (chosen) next.set("whose", chosen.value);
    next.delete("cursor");
    next.delete("trail");
    go(`#/leads?${next}`);
  } },
  h("label", {}, "Search", search), h("label", {}, "Tag", tag), h("label", {}, "Sort", sort), whose,
  h("button", { type: "submit" }, "Filter"));
  const now = Date.now();
  const rows = body.items.map((lead) => {
    const overdue = lead.next_task_due_at && new Date(lead.next_task_due_at).getTime() < now;
    return h("tr", { "data-lead": lead.id },
      h("td", {}, h("a", { href: `#/leads/${lead.id}` }, lead.erased ? h("span", { class: "muted" }, "Erased lead") : lead.name)),
      h("td", {}, pretty(lead.stage)),
      whole ? h("td", {}, lead.assigned_agent_id ? person(lead.assigned_agent_id) : "Unassigned") : null,
      h("td", {}, lead.email || ""), h("td", {}, lead.phone || ""),
      h("td", {}, lead.tags.map((t) => h("span", { class: "tag" }, t))),
      h("td", {}, when(lead.next_task_due_at), overdue ? h("span", { class: "badge bad" }, "Overdue") : null),
      h("td", {}, when(lead.updated_at)));
  });
  const headers = ["Name", "Stage", ...(whole ? ["Agent"] : []), "Email", "Phone", "Tags", "Next task", "Updated"];
  const total = query.get("stage") ? counts[query.get("stage")] || 0 : all;
  const name = h("input", { name: "name", required: true });
  const email = h("input", { name: "email", type: "email" });
  const phone = h("input", { name: "phone" });
  const create = h("form", { class: "card grid", onsubmit: async (e) => {
    e.preventDefault();
    const lead = { name: name.value };
    if (email.value) lead.email = email.value;
    if (phone.value) lead.phone = phone.value;
    const made = await attempt(() => api("POST", "/api/leads", lead), null, create);
    if (made) go(`#/leads/${made.body.id}`, "Lead created.", true);
  } }, h("label", {}, "Name", name), h("label", {}, "Email", email), h("label", {}, "Phone", phone),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Add lead")));
  page(mine, "Lead Manager", chips, filters,
    table(whole ? "The whole site's leads" : "My leads", headers, rows,
      query.get("q") || query.get("tag") || query.get("stage") ? "No leads match these filters." : "No leads yet."),
    pager("#/leads", query, body.next_cursor, body.items.length, total),
    viewing() ? null : [h("h2", {}, "New lead"), create]);
}

const LEAD_FIELDS = [["name", "Name"], ["email", "Email"], ["phone", "Phone"], ["source", "Source"],
  ["stage", "Stage"], ["tags", "Tags"], ["assigned_agent_id", "Agent"]];

async function lead(id) {
  const mine = ticket;
  const [{ body: lead, etag }] = await Promise.all([api("GET", `/api/leads/${id}`), manages() ? load_people() : null]);
  if (lead.erased) return erased_lead(mine, lead);
  const field = (key, label, attrs) => h("label", {}, label,
    h("input", { name: key, value: lead[key] || "", ...(attrs || {}) }));
  const stage = h("select", { name: "stage" }, STAGES.map((s) => h("option", { value: s, selected: s === lead.stage }, pretty(s))));
  const conflict = h("div", { class: "conflict", hidden: true, role: "alert" });
  const form = h("form", { class: "card grid", "aria-label": "Lead details", onsubmit: async (e) => {
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
    clear_errors(form);
    try {
      await api("PATCH", `/api/leads/${id}`, edit, { "If-Match": etag });
      say("Saved.", true);
      lead_again(id);
    } catch (problem) {
      if (problem.status === 409 && !problem.handled) await stale(conflict, lead, edit, id);
      else await attempt(() => { throw problem; }, null, form);
    }
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
  const agents = [...state.people.values()].filter((u) => u.role === "agent" && u.active);
  const assign = manages() && agents.length ? h("form", { class: "actions card", "aria-label": "Assignment", onsubmit: async (e) => {
    e.preventDefault();
    const agent_id = new FormData(e.target).get("agent_id");
    if (agent_id === lead.assigned_agent_id) { say("Already assigned to them.", true); return; }
    if (await attempt(() => api("POST", `/api/leads/${id}/assign`, { agent_id }), "Reassigned.", e.target)) lead_again(id);
  } }, h("label", {}, "Assigned agent", h("select", { name: "agent_id" },
    lead.assigned_agent_id ? null : h("option", { value: "" }, "Unassigned"),
    agents.map((a) => h("option", { value: a.id, selected: a.id === lead.assigned_agent_id }, a.name)))),
  h("button", { type: "submit", class: "quiet" }, "Assign")) : null;
  const note = h("textarea", { name: "body", required: true });
  const by = (item) => (item.author_name ? `${item.author_name} · ` : "");
  const notes = h("section", { class: "card", "aria-labelledby": "notes-h" }, h("h2", { id: "notes-h" }, "Notes"),
    lead.notes.length ? h("ul", { class: "plain" }, lead.notes.map((n) => h("li", {}, h("p", { class: "body" }, n.body),
      h("span", { class: "muted" }, `${by(n)}${when(n.created_at)}`))))
      : h("p", { class: "muted" }, "No notes yet."),
    writes(h("form", { onsubmit: async (e) => {
      e.preventDefault();
      if (await attempt(() => api("POST", `/api/leads/${id}/notes`, { body: note.value }), "Note added.", e.target)) lead_again(id);
    } }, h("label", {}, "New note", note), h("div", { class: "actions" }, h("button", { type: "submit" }, "Add note"))), true));
  const title = h("input", { name: "title", required: true });
  const due = h("input", { name: "due_at", type: "datetime-local", required: true });
  const now = Date.now();
  const tasks = h("section", { class: "card", "aria-labelledby": "tasks-h" }, h("h2", { id: "tasks-h" }, "Tasks"),
    lead.tasks.length ? h("ul", { class: "plain" }, lead.tasks.map((t) => h("li", { "data-task": t.title }, t.title, " · due ", when(t.due_at), " ",
      t.completed_at ? h("span", { class: "badge" }, "Done")
        : [new Date(t.due_at).getTime() < now ? h("span", { class: "badge bad" }, "Overdue") : null,
          viewing() ? null : h("button", { type: "button", class: "quiet", "aria-label": `Complete ${t.title}`, onclick: async () => {
            if (await attempt(() => api("POST", `/api/leads/${id}/tasks/${t.id}/complete`), "Task done.")) lead_again(id);
          } }, "Complete")])))
      : h("p", { class: "muted" }, "No tasks yet."),
    writes(h("form", { class: "actions", onsubmit: async (e) => {
      e.preventDefault();
      const due_at = zoned(due.value);
      if (await attempt(() => api("POST", `/api/leads/${id}/tasks`, { title: title.value, due_at }), "Task added.", e.target)) lead_again(id);
    } }, h("label", {}, "Task", title), h("label", {}, `Due (${zone().replaceAll("_", " ")})`, due),
    h("button", { type: "submit" }, "Add task")), true));
  const channel = h("select", { name: "channel" }, ["call", "email", "text"].map((c) => h("option", { value: c }, c)));
  const direction = h("select", { name: "direction" }, ["outbound", "inbound"].map((d) => h("option", { value: d }, d)));
  const summary = h("input", { name: "summary", required: true });
  const comms = h("section", { class: "card", "aria-labelledby": "comms-h" }, h("h2", { id: "comms-h" }, "Communications"),
    lead.communications.length ? h("ul", { class: "plain" }, lead.communications.map((c) => h("li", {},
      `${c.direction} ${c.channel}: `, c.summary, " ", h("span", { class: "muted" }, `${by(c)}${when(c.at || c.created_at)}`))))
      : h("p", { class: "muted" }, "No calls, emails or texts logged yet."),
    writes(h("form", { class: "actions", onsubmit: async (e) => {
      e.preventDefault();
      const sent = { channel: channel.value, direction: direction.value, summary: summary.value };
      if (await attempt(() => api("POST", `/api/leads/${id}/communications`, sent), "Logged.", e.target)) lead_again(id);
    } }, h("label", {}, "Channel", channel), h("label", {}, "Direction", direction),
    h("label", {}, "Summary", summary), h("button", { type: "submit" }, "Log")), true));
  const owner = lead.assigned_agent_id && state.people.size ? ` · agent ${person(lead.assigned_agent_id)}` : "";
  page(mine, lead.name, h("p", {}, h("a", { href: "#/leads" }, "← Lead Manager"),
    h("span", { class: "muted" }, `${owner} · updated ${when(lead.updated_at)}`)),
  conflict, writes(form), writes(assign), h("div", { class: "two" }, notes, tasks), h("p", {}), comms, erase_form(lead));
}

/** Owners and admins (as themselves) may erase a lead's personal data, with a
 * reason, after confirming: it cannot be undone. */
function erase_form(lead) {
  if (!manages()) return null;
  const reason = h("input", { name: "reason", required: true, maxlength: 500,
    "aria-describedby": "erase-reason-help", placeholder: "e.g. erasure request #4411 of 2026-12-01" });
  const form = h("form", { class: "card danger-zone", "aria-labelledby": "erase-h", onsubmit: async (e) => {
    e.preventDefault();
    clear_errors(form);
    if (!reason.value.trim()) { field_error(form, "reason", "Give the reason for the erasure."); reason.focus(); return; }
    if (!confirm(`Erase ${lead.name}'s name, email, phone, notes, tasks and call summaries for good? This cannot be undone.`)) return;
    const done = await attempt(() => api("POST", `/api/leads/${lead.id}/erase`, { reason: reason.value }), null, form);
    if (done) go(`#/leads/${lead.id}`, "Personal data erased.", true);
  } }, h("h2", { id: "erase-h" }, "Erase personal data"),
  h("p", { class: "muted" }, "For a buyer's or seller's request to be forgotten. Their personal data becomes unreadable everywhere, the audit trail keeps who changed what and when, and no one can work on the lead again."),
  h("label", {}, "Reason (recorded)", reason),
  h("p", { id: "erase-reason-help", class: "muted" }, "Kept for good in the audit trail, as written: no names, emails, phone numbers or other personal data."),
  h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Erase personal data")));
  return form;
}

/** An erased lead: what is left of it, read only. */
function erased_lead(mine, lead) {
  const gone = h("span", { class: "muted" }, "[erased]");
  const by = (item) => (item.author_name ? `${item.author_name} · ` : "");
  const list = (items, line, none) => (items.length ? h("ul", { class: "plain" }, items.map(line)) : h("p", { class: "muted" }, none));
  page(mine, "Erased lead", h("p", {}, h("a", { href: "#/leads" }, "← Lead Manager")),
    h("p", { class: "notice", role: "status" }, "This lead's personal data was erased. What is left shows when things happened and who did them."),
    h("dl", { class: "card facts" },
      h("dt", {}, "Stage"), h("dd", {}, pretty(lead.stage)),
      h("dt", {}, "Tags"), h("dd", {}, lead.tags.length ? lead.tags.join(", ") : "None"),
      h("dt", {}, "Created"), h("dd", {}, when(lead.created_at)),
      h("dt", {}, "Erased"), h("dd", {}, when(lead.updated_at))),
    h("section", { class: "card", "aria-label": "Notes" }, h("h2", {}, "Notes"),
      list(lead.notes, (n) => h("li", {}, gone.cloneNode(true), " ", h("span", { class: "muted" }, `${by(n)}${when(n.created_at)}`)), "No notes.")),
    h("section", { class: "card", "aria-label": "Tasks" }, h("h2", {}, "Tasks"),
      list(lead.tasks, (t) => h("li", {}, gone.cloneNode(true), " · due ", when(t.due_at), t.completed_at ? " · done" : ""), "No tasks.")),
    h("section", { class: "card", "aria-label": "Communications" }, h("h2", {}, "Communications"),
      list(lead.communications, (c) => h("li", {}, `${c.direction} ${c.channel}: `, gone.cloneNode(true), " ",
        h("span", { class: "muted" }, `${by(c)}${when(c.created_at)}`)), "None logged.")));
}

/**
 * A save refused as stale: someone changed the lead since it was opened. Shows
 * what changed since (and what this edit wanted) and offers Reload.
 */
async function stale(box, opened, edit, id) {
  let current = null;
  try { current = (await api("GET", `/api/leads/${id}`)).body; } catch (problem) { if (problem.handled) return; }
  const show = (key, value) => (key === "assigned_agent_id" ? person(value)
    : key === "stage" ? pretty(value) : Array.isArray(value) ? value.join(", ") : value || "—");
  // What someone else changed, and what this edit wanted (so it can be made again).
  const changed = current ? LEAD_FIELDS.filter(([key]) => key in edit
    || JSON.stringify(opened[key]) !== JSON.stringify(current[key])) : [];
  say("");
  box.replaceChildren(
    h("h2", {}, "Someone changed this lead since you opened it"),
    h("p", {}, "Your changes were not saved. Reload to see the latest version, then make your change again."),
    changed.length ? table("What changed since you opened it", ["Field", "When you opened it", "Now", "Your edit"],
      changed.map(([key, label]) => h("tr", {}, h("td", {}, label), h("td", {}, show(key, opened[key])),
        h("td", {}, show(key, current[key])), h("td", {}, key in edit ? show(key, edit[key]) : "—"))), "") : null,
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => { say(""); lead_again(id); } }, "Reload")));
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
  box.querySelector("button").focus();
}

function lead_again(id) { route(`#/leads/${id}`); }

// --- users and the site's rules ---------------------------------------------

async function users() {
  const mine = ticket;
  const people = await load_people();
  const list = [...people.values()].sort((a, b) => a.name.localeCompare(b.name));
  const rows = list.map((u) => {
    const you = u.id === me_id();
    const actions = [];
    if (u.can_impersonate) {
      actions.push(h("button", { type: "button", class: "quiet", "aria-label": `Log in as user ${u.name}`, onclick: () => log_in_as(u, "edit") }, "Log in as user"));
      actions.push(h("button", { type: "button", class: "quiet", "aria-label": `View only as ${u.name}`, onclick: () => log_in_as(u, "view") }, "View only"));
    } else {
      actions.push(h("span", { class: "muted why" }, sentence(u.cannot_impersonate_because || "")));
    }
    if (manageable(u)) {
      actions.push(h("button", { type: "button", class: "quiet", "aria-label": `Change role of ${u.name}`, onclick: () => change_role(u) }, "Change role"));
      actions.push(h("button", { type: "button", class: u.active ? "danger" : "quiet",
        "aria-label": `${u.active ? "Deactivate" : "Reactivate"} ${u.name}`, onclick: () => set_active(u, !u.active) },
      u.active ? "Deactivate" : "Reactivate"));
    }
    return h("tr", { "data-user": u.email },
      h("td", {}, u.name, you ? h("span", { class: "muted" }, " (you)") : null), h("td", {}, u.email),
      h("td", {}, u.role), h("td", {}, u.active ? "active" : h("span", { class: "badge" }, "deactivated")),
      h("td", {}, h("div", { class: "actions" }, actions)));
  });
  let create = null;
  if (manages()) {
    const name = h("input", { name: "name", required: true, autocomplete: "off" });
    const email = h("input", { name: "email", type: "email", required: true, autocomplete: "off" });
    const password = h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" });
    const choice = h("select", { name: "role" }, assignable().map((r) => h("option", { value: r, selected: r === "agent" }, r)));
    create = [h("h2", {}, "Add a user"), h("form", { class: "card grid", onsubmit: async (e) => {
      e.preventDefault();
      const made = await attempt(() => api("POST", "/api/users",
        { name: name.value, email: email.value, role: choice.value, password: password.value }), null, e.target);
      if (made) go("#/users", `${made.body.name} was added as ${made.body.role}.`, true);
    } }, h("label", {}, "Name", name), h("label", {}, "Email", email), h("label", {}, "Role", choice),
    h("label", {}, "First password", password), h("div", { class: "actions" }, h("button", { type: "submit" }, "Add user")))];
  }
  page(mine, "Users", table("The site's users", ["Name", "Email", "Role", "Status", "Actions"], rows, "No users."), create);
}

function dialog(title, ...content) {
  const box = $("#dialog");
  box.setAttribute("aria-labelledby", "dialog-title");
  box.replaceChildren(h("h2", { id: "dialog-title" }, title), ...content);
  box.showModal();
  return box;
}

/** "Log in as user" (`edit`) or "View only" (`view`: nothing can be changed). */
function log_in_as(user, mode) {
  const reason = h("textarea", { name: "reason", required: true });
  const view = mode === "view";
  const box = dialog(view ? `View ${user.name}'s account` : `Log in as ${user.name}`,
    h("form", { method: "dialog", onsubmit: async (e) => {
      e.preventDefault();
      const started = await attempt(() => api("POST", "/api/impersonation", { user_id: user.id, reason: reason.value, mode }), null, e.target);
      if (!started) return;
      box.close();
      set_me(started.body);
      await load_zone();
      go("#/leads");
    } },
    h("p", { class: "muted" }, view
      ? "You see their account as they do, and nothing can be changed. The audit trail records the session with your name and this reason."
      : "Changes you make apply to their account and show there as theirs; the audit trail records each one with your name and this reason."),
    h("label", {}, "Reason", reason),
    h("div", { class: "actions" }, h("button", { type: "submit" }, view ? "View" : "Log in"),
      h("button", { type: "button", class: "quiet", onclick: () => box.close() }, "Cancel"))));
  reason.focus();
}

/** Whom the caller may change: nobody touches the owner or themselves; only the owner touches admins. */
const manageable = (u) => manages() && u.id !== me_id() && u.role !== "owner" && (role() === "owner" || u.role !== "admin");
/** The roles the caller may give: there is one owner; only the owner makes admins. */
const assignable = () => ROLES.filter((r) => r !== "owner" && (role() === "owner" || r !== "admin"));

function change_role(user) {
  const choice = h("select", { name: "role" }, assignable().map((r) => h("option", { value: r, selected: r === user.role }, r)));
  const box = dialog(`Change the role of ${user.name}`,
    h("form", { method: "dialog", onsubmit: async (e) => {
      e.preventDefault();
      if (choice.value === user.role) { box.close(); return; }
      const saved = await attempt(() => api("PATCH", `/api/users/${user.id}`, { role: choice.value },
        { "If-Match": `"${user.version}"` }), null, e.target);
      if (!saved) { box.close(); return; }
      box.close();
      go("#/users", `${user.name} is now ${choice.value}.`, true);
    } },
    h("p", { class: "muted" }, "Taking away the right to log in as users ends any session they have open as someone else."),
    h("label", {}, "Role", choice),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Change role"),
      h("button", { type: "button", class: "quiet", onclick: () => box.close() }, "Cancel"))));
  choice.focus();
}

async function set_active(user, active) {
  if (!active && !confirm(`Deactivate ${user.name}? They are signed out at once and cannot sign in until reactivated.`)) return;
  const saved = await attempt(() => api("PATCH", `/api/users/${user.id}`, { active }, { "If-Match": `"${user.version}"` }));
  if (saved) go("#/users", `${user.name} was ${active ? "reactivated" : "deactivated"}.`, true);
}

async function site_rules() {
  const mine = ticket;
  const { body: rules, etag } = await api("GET", "/api/site/settings");
  const owner = role() === "owner";
  const inputs = SITE_RULES.map(([key, label, kind]) => {
    const input = kind === "bool"
      ? h("input", { type: "checkbox", name: key, checked: rules[key] === true, disabled: !owner })
      : h("input", { type: "number", name: key, min: "1", max: "1440", value: rules[key], disabled: !owner, required: true });
    return [key, kind, input, h("label", { class: kind === "bool" ? "check" : "" }, kind === "bool" ? [input, label] : [label, input])];
  });
  const form = h("form", { class: "card grid rules", onsubmit: async (e) => {
    e.preventDefault();
    const change = {};
    for (const [key, kind, input] of inputs) {
      const value = kind === "bool" ? input.checked : Number(input.value);
      if (value !== rules[key]) change[key] = value;
    }
    if (!Object.keys(change).length) { say("Nothing to save.", true); return; }
    if (await attempt(() => api("PATCH", "/api/site/settings", change, etag ? { "If-Match": etag } : {}), "Site rules saved.", form)) route();
  } }, inputs.map((i) => i[3]), owner ? h("div", { class: "actions" }, h("button", { type: "submit" }, "Save rules")) : null);
  page(mine, "Site rules",
    h("p", { class: "muted" }, owner
      ? "How \"Log in as user\" works on this site. Switching it off ends every session open now."
      : "How \"Log in as user\" works on this site. Only the owner can change these."),
    form);
}

// --- settings, templates, account ---------------------------------------------

async function settings() {
  const mine = ticket;
  const [{ body: current, etag }, { body: templates }] = await Promise.all([
    api("GET", "/api/settings"), api("GET", "/api/templates")]);
  const values = current.settings || {};
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
    return [key, kind, h("label", {}, label, input), input];
  });
  const form = h("form", { class: "card grid", "aria-label": "Settings", onsubmit: async (e) => {
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
    if (await attempt(() => api("PATCH", "/api/settings", change, etag ? { "If-Match": etag } : {}), "Settings saved.", form)) {
      await load_zone();
      route();
    }
  } }, inputs.map((i) => i[2]), h("div", { class: "actions" }, h("button", { type: "submit" }, "Save settings")));
  const list = (templates.items || templates).map((t) => h("tr", { "data-template": t.name },
    h("td", {}, t.kind), h("td", {}, t.name), h("td", {}, t.subject || ""), h("td", {}, t.body),
    h("td", {}, viewing() ? h("span", { class: "muted" }, "View only") : h("div", { class: "actions" },
      h("button", { type: "button", class: "quiet", "aria-label": `Edit ${t.name}`, onclick: () => edit_template(t) }, "Edit"),
      h("button", { type: "button", class: "danger", "aria-label": `Delete ${t.name}`, onclick: async () => {
        if (confirm(`Delete the template ${t.name}?`) && await attempt(() => api("DELETE", `/api/templates/${t.id}`,
          undefined, { "If-Match": `"${t.version}"` }), "Template deleted.")) route();
      } }, "Delete")))));
  const kind = h("select", { name: "kind" }, h("option", { value: "email" }, "email"), h("option", { value: "text" }, "text"));
  const name = h("input", { name: "name", required: true });
  const subject = h("input", { name: "subject" });
  const text = h("textarea", { name: "body", required: true });
  const create = h("form", { class: "card grid", "aria-label": "New template", onsubmit: async (e) => {
    e.preventDefault();
    const made = { kind: kind.value, name: name.value, body: text.value };
    if (subject.value) made.subject = subject.value;
    if (await attempt(() => api("POST", "/api/templates", made), "Template added.", create)) route();
  } }, h("label", {}, "Kind", kind), h("label", {}, "Name", name), h("label", {}, "Subject", subject),
  h("label", {}, "Body", text), h("div", { class: "actions" }, h("button", { type: "submit" }, "Add template")));
  page(mine, "Settings", writes(form), h("h2", {}, "Templates"),
    table("Templates", ["Kind", "Name", "Subject", "Body", "Actions"], list, "No templates yet."),
    viewing() ? null : [h("h2", {}, "New template"), create]);
}

/** A template's name, subject and body, changed in a dialog (with its version). */
function edit_template(template) {
  const name = h("input", { name: "name", value: template.name, required: true });
  const subject = h("input", { name: "subject", value: template.subject || "" });
  const body = h("textarea", { name: "body", required: true }, template.body);
  const box = dialog(`Edit ${template.kind} template`, h("form", { method: "dialog", onsubmit: async (e) => {
    e.preventDefault();
    const change = {};
    if (name.value !== template.name) change.name = name.value;
    if (subject.value !== (template.subject || "")) change.subject = subject.value;
    if (body.value !== template.body) change.body = body.value;
    if (!Object.keys(change).length) { box.close(); return; }
    const saved = await attempt(() => api("PATCH", `/api/templates/${template.id}`, change,
      { "If-Match": `"${template.version}"` }), "Template saved.", e.target);
    if (saved) { box.close(); route(); }
  } },
  h("label", {}, "Name", name),
  template.kind === "email" ? h("label", {}, "Subject", subject) : null,
  h("label", {}, "Body", body),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Save"),
    h("button", { type: "button", class: "quiet", onclick: () => box.close() }, "Cancel"))));
  name.focus();
}

async function account() {
  const mine = ticket;
  const me = state.me.user;
  const current = h("input", { type: "password", name: "current_password", autocomplete: "current-password", required: true });
  const next = h("input", { type: "password", name: "new_password", autocomplete: "new-password", required: true });
  const form = h("form", { class: "card grid", "aria-label": "Change password", onsubmit: async (e) => {
    e.preventDefault();
    if (await attempt(() => api("POST", "/api/me/password", { current_password: current.value, new_password: next.value }),
      "Password changed.", form)) { current.value = ""; next.value = ""; }
  } }, h("label", {}, "Current password", current), h("label", {}, "New password", next),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Change password")));
  // Auditors change no setting: the zone they read times in is this browser's choice.
  const shown_in = role() === "auditor"
    ? h("form", { class: "card actions", "aria-label": "Time zone", onsubmit: (e) => {
      e.preventDefault();
      localStorage.setItem(`crm.zone.${me_id()}`, new FormData(e.target).get("zone"));
      go("#/account", "Times are now shown in the zone you chose (in this browser).", true);
    } }, h("label", {}, "Show times in", h("select", { name: "zone" },
      zones().map(([v, text]) => h("option", { value: v, selected: v === zone() }, text)))),
    h("button", { type: "submit", class: "quiet" }, "Use this zone"))
    : null;
  page(mine, "Account",
    h("dl", { class: "card facts" }, h("dt", {}, "Name"), h("dd", {}, me.name), h("dt", {}, "Email"), h("dd", {}, me.email),
      h("dt", {}, "Role"), h("dd", {}, me.role), h("dt", {}, "Times shown in"), h("dd", {}, zone().replaceAll("_", " "))),
    shown_in, h("h2", {}, "Password"), form);
}

async function notifications() {
  const mine = ticket;
  const items = await load_notifications();
  const rows = items.map((n) => h("tr", { class: n.read_at ? "" : "unread" },
    h("td", {}, n.read_at ? "" : h("span", { class: "badge" }, "New")), h("td", {}, n.text), h("td", {}, when(n.created_at))));
  const mark = state.unread.length
    ? h("div", { class: "actions" }, h("button", { type: "button", disabled: impersonating(), onclick: async () => {
      const up_to_position = Math.max(...items.map((n) => n.position));
      if (await attempt(() => api("POST", "/api/me/notifications/read", { up_to_position }), "Marked as read.")) route();
    } }, "Mark all as read"),
    impersonating() ? h("span", { class: "muted" }, "Only the account holder can mark these read.") : null)
    : null;
  page(mine, "Notifications", mark, table("Notifications", ["", "What", "When"], rows, "No notifications."));
}

// --- the audit -------------------------------------------------------------------

const DID = {
  SiteCreated: "Created the site", SiteSettingsChanged: "Changed the rules of the site",
  UserCreated: "Added the user", UserRoleChanged: "Changed the role of", UserEmailChanged: "Changed the email of",
  UserDeactivated: "Deactivated", UserReactivated: "Reactivated", UserPasswordChanged: "Changed the password of",
  LeadCreated: "Created the lead", LeadFieldsUpdated: "Edited the lead", LeadStageChanged: "Moved the lead",
  LeadReassigned: "Reassigned the lead", LeadTagAdded: "Tagged the lead", LeadTagRemoved: "Untagged the lead",
  LeadNoteAdded: "Added a note to", LeadTaskCreated: "Added a task to", LeadTaskCompleted: "Completed a task on",
  LeadCommunicationLogged: "Logged a contact with", LeadArchived: "Archived the lead", LeadErased: "Erased the personal data of",
  LeadViewed: "Viewed the lead", ImpersonationReverted: "Reverted",
  UserSettingsChanged: "Changed the settings of", TemplateCreated: "Created the template",
  TemplateUpdated: "Edited the template", TemplateDeleted: "Deleted the template",
};
const FIELD_NAMES = {
  assigned_agent_id: "agent", archived: "archived", erased: "erased", tag: "tag", note: "note", task: "task",
  communication: "contact", active: "active", ...Object.fromEntries([...SETTINGS, ...SITE_RULES].map(([k, l]) => [k, l.toLowerCase()])),
};
const field_name = (field) => FIELD_NAMES[field] || pretty(field);

/** A value of a change in words. */
function value_text(field, value) {
  if (value === null || value === undefined || value === "") return "—";
  if (field === "stage") return pretty(value);
  if (field === "assigned_agent_id" || field === "admin_id") return person(value);
  if (field === "note" && typeof value === "object") return value.body;
  if (field === "task" && typeof value === "object") {
    return value.title ? `${value.title}, due ${when(value.due_at)}` : value.completed ? "done" : "open";
  }
  if (field === "communication" && typeof value === "object") return `${value.direction} ${value.channel}: ${value.summary}`;
  if (field === "reverted" && typeof value === "object") {
    return `${plural(value.reverted, "change")} put back, ${value.conflicts} left alone, ${value.not_revertible} not revertible: ${value.reason}`;
  }
  if (field === "lead_manager.default_sort") return (SORTS.find(([v]) => v === value) || [value, value])[1];
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.length ? value.join(", ") : "none";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** What a change is about, by name, linked to that thing's history. */
function entity(c) {
  if (c.entity_type === "session") return h("a", { href: `#/audit/${c.entity_id}` }, "a session");
  const label = c.entity_label || `${c.entity_type} (no name)`;
  const history = new URLSearchParams({ entity_type: c.entity_type, entity_id: c.entity_id });
  return h("a", { href: `#/audit?${history}#changes`, title: `Every change of ${label}` }, label);
}

function change_rows(changes, with_who) {
  return changes.map((c) => h("tr", { "data-position": c.position },
    h("td", { class: "when" }, when(c.at, true)),
    with_who ? h("td", {}, c.actor_name || person(c.actor_id),
      c.impersonation_id ? [" as ", h("a", { href: `#/audit/${c.impersonation_id}`, title: "The session" }, c.subject_name || person(c.subject_id))] : null)
      : null,
    h("td", {}, `${DID[c.event_type] || pretty(c.event_type)} `, entity(c)),
    // A view changed nothing: it says so rather than "— → —".
    c.kind === "view" ? [h("td", {}, "—"), h("td", { class: "muted" }, "Opened; nothing changed")]
      : [h("td", {}, field_name(c.field)),
        h("td", { class: "change" },
          h("span", { class: "before" }, value_text(c.field, c.before)),
          h("span", { class: "arrow" }, " → "),
          h("span", { class: "after" }, value_text(c.field, c.after)))]));
}

function sessions_table(items, caption) {
  return table(caption, ["Started", "Admin", "Logged in as", "Reason", "Ended", "How", "Changes"], items.map((s) =>
    h("tr", { "data-session": s.id },
      h("td", {}, h("a", { href: `#/audit/${s.id}` }, when(s.started_at))),
      h("td", {}, s.admin.name), h("td", {}, s.subject.name, s.mode === "view" ? [" ", h("span", { class: "badge" }, "view only")] : null),
      h("td", {}, s.reason || ""),
      h("td", {}, s.ended_at ? when(s.ended_at) : "ongoing"), h("td", {}, pretty(s.end_reason)),
      h("td", { class: "num" }, s.change_count))), "No sessions.");
}

/** Counts the records of a CSV text (quoted fields may hold line breaks). */
function csv_records(text) {
  let records = 0; let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    if (text[i] === "\"") quoted = !quoted;
    else if (text[i] === "\n" && !quoted) records += 1;
  }
  return Math.max(0, records - 1);
}

/** The audit export of `filter`, saved as a file named after `what`; says what was exported. */
async function download(format, filter, what, slug) {
  const query = new URLSearchParams(filter);
  query.delete("limit");
  query.delete("cursor");
  query.delete("order");
  query.set("format", format);
  busy(true);
  try {
    const response = await fetch(`/api/audit/export?${query}`, { headers: { Authorization: `Bearer ${state.token}` } });
    if (!response.ok) { say(`The export failed (${response.status}).`); return; }
    const text = await response.text();
    const rows = format === "csv" ? csv_records(text) : text.split("\n").filter(Boolean).length;
    const up_to = response.headers.get("X-Up-To-Position");
    const name = `audit-${slug}-to-position-${up_to}.${format === "csv" ? "csv" : "ndjson"}`;
    save(name, text, format === "csv" ? "text/csv" : "application/x-ndjson");
    const told = `Exported ${plural(rows, "change")} (${what}) up to position ${up_to} as ${name}, oldest first, with names and reasons. `;
    // With a signing key, the export's signed manifest: the same filter and
    // position always give these bytes, and the manifest proves them.
    const manifest = async () => {
      query.set("up_to", up_to);
      const got = await attempt(() => api("GET", `/api/audit/export/manifest?${query}`));
      if (got) save(`${name}.manifest.json`, `${JSON.stringify(got.body, null, 2)}\n`, "application/json");
    };
    say(state.signs
      ? [told, h("button", { type: "button", class: "quiet", onclick: manifest }, "Download its signed manifest")]
      : told, true);
  } finally {
    busy(false);
  }
}

/** The chain check as a panel: intact or broken, when, the head, the signed
 * digests (the latest, with its hash), and what to do. */
function chain_panel(v, latest) {
  const checked = `Checked ${when(v.checked_at, true)}: ${plural(v.events_checked, "event")}.`;
  const head = v.head_position
    ? h("p", {}, "Head: position ", h("strong", {}, v.head_position), ", hash ",
      h("code", { class: "hash" }, v.head_hash)) : null;
  const d = v.digests;
  const digests = !d
    ? h("p", { class: "muted" }, "Signed digests are off on this server: that the log is complete rests on the chain alone.")
    : h("div", {},
      h("p", {}, !d.ok ? `Signed digests: ${sentence(d.problem)}`
        : d.digests ? `Signed digests: ${plural(d.digests, "digest")} hold; the log is complete up to position ${d.latest_to_position}.`
          : "Signed digests: none yet; the server signs one for the site within its digest interval."),
      latest ? h("p", { class: "digest" }, `Latest digest ${latest.seq}: position ${latest.to_position}, signed ${when(latest.signed_at, true)}, head hash `,
        h("code", { class: "hash" }, latest.head_hash), ` (key ${latest.key_id}). `,
      h("button", { type: "button", class: "quiet", onclick: () => public_key() }, "Download the public key")) : null);
  const again = h("button", { type: "button", class: "quiet", onclick: () => route() }, "Check again");
  if (v.ok) {
    return h("section", { class: "chain ok", "aria-labelledby": "chain-h" },
      h("h2", { id: "chain-h" }, "✓ The log is intact"), h("p", {}, checked), head, digests,
      h("p", { class: "muted" }, "An auditor can check this offline: crm verify --digests <directory> --public-key <file>."),
      again);
  }
  const at = v.first_bad_position;
  return h("section", { class: "chain bad", role: "alert", "aria-labelledby": "chain-h" },
    h("h2", { id: "chain-h" }, at ? `✗ The log is broken at position ${at}` : "✗ The log does not match its signed digests"),
    at ? h("p", {}, sentence(v.problem || "an event does not match the chain")) : null,
    h("p", {}, checked), head, digests,
    at ? h("p", {}, h("a", { href: `#/event/${at}` }, `See the event at position ${at}`)) : null,
    h("p", {}, "What to do: keep a copy of the database as it is now, tell whoever runs the server, and have them run "
      + "crm verify there. What the last intact digest covers is proven; treat what follows as unproven."),
    again);
}

/** Saves `text` as a file named `name`. */
function save(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function public_key() {
  const got = await attempt(() => api("GET", "/api/audit/public-key"));
  if (got) save(`crm-public-key-${got.body.key_id}.pem`, got.body.pem, "application/x-pem-file");
}

/** The API's filters for a page's address: the `keys` it names, and its days (in
 * the account's zone) as `from` and `to`; 50 a page. */
function filters_of(query, keys) {
  const filter = new URLSearchParams({ limit: "50" });
  for (const key of keys) if (query.get(key)) filter.set(key, query.get(key));
  if (query.get("from_day")) filter.set("from", zoned(`${query.get("from_day")}T00:00`));
  if (query.get("to_day")) filter.set("to", zoned(`${next_day(query.get("to_day"))}T00:00`));
  return filter;
}

/** A filter's select of `options` ([value, text]), "any" first. */
function choice(query, key, label, options) {
  return h("label", {}, label, h("select", { name: key },
    h("option", { value: "" }, "any"),
    options.map(([value, text]) => h("option", { value, selected: query.get(key) === value }, text))));
}

/** A filter's day, labelled with the zone it is read in. */
function day_filter(query, key, label) {
  return h("label", {}, `${label} (${zone().replaceAll("_", " ")})`,
    h("input", { type: "date", name: key, value: query.get(key) || "" }));
}

async function audit(params) {
  const mine = ticket;
  const query = new URLSearchParams(params);
  const filter = filters_of(query, ["actor_id", "subject_id", "entity_type", "entity_id", "impersonated", "kind", "cursor"]);
  const [{ body: sessions }, { body: verified }, , { body: changes }, { body: digests }] = await Promise.all([
    api("GET", "/api/audit/impersonations?limit=10"), api("GET", "/api/audit/verify"),
    load_people(), api("GET", `/api/audit/changes?${filter}`), api("GET", "/api/audit/digests?limit=1")]);
  state.signs = Boolean(verified.digests);
  const users = [...state.people.values()].sort((a, b) => a.name.localeCompare(b.name)).map((u) => [u.id, u.name]);
  const choose = (key, label, options) => choice(query, key, label, options);
  const day = (key, label) => day_filter(query, key, label);
  const form = h("form", { class: "toolbar", role: "search", "aria-label": "Filter the changes", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) next.set(key, value);
    // Narrowed to one lead or template: stays so while "What" still says its kind.
    if (query.get("entity_id") && next.get("entity_type") === query.get("entity_type")) {
      next.set("entity_id", query.get("entity_id"));
    }
    if (next.get("from_day") && next.get("to_day") && next.get("from_day") > next.get("to_day")) {
      say("\"From\" is after \"To\": no change can match. Swap them or clear one.");
      return;
    }
    go(`#/audit?${next}#changes`);
  } },
  choose("actor_id", "Who acted", users), choose("subject_id", "On whose account", users),
  choose("entity_type", "What", [["lead", "leads"], ["template", "templates"], ["settings", "settings"], ["user", "users"], ["site", "the site"]]),
  choose("impersonated", "While logged in as someone", [["true", "yes"], ["false", "no"]]),
  choose("kind", "Changes or leads opened", [["change", "changes"], ["view", "leads opened"]]),
  day("from_day", "From"), day("to_day", "To"),
  h("button", { type: "submit" }, "Show changes"));
  // What the filter narrows to, named from the changes themselves (never from the address).
  const one = query.get("entity_id")
    ? ((changes.items.find((c) => c.entity_id === query.get("entity_id")) || {}).entity_label || `one ${query.get("entity_type") || "thing"}`)
    : null;
  const only = one
    ? h("p", { class: "chips" }, h("span", { class: "chip", "aria-pressed": "true" }, `Only ${one}`),
      h("a", { href: `#/audit?${(() => { const n = new URLSearchParams(query); n.delete("entity_id"); n.delete("label"); n.delete("cursor"); n.delete("trail"); return n; })()}#changes` }, "Show all"))
    : null;
  const described = [
    query.get("actor_id") && `by ${person(query.get("actor_id"))}`,
    query.get("subject_id") && `on ${person(query.get("subject_id"))}'s account`,
    one && `of ${one}`,
    query.get("entity_type") && !one && `of ${query.get("entity_type")}s`,
    query.get("impersonated") === "true" && "made while logged in as someone",
    query.get("impersonated") === "false" && "made as themselves",
    query.get("kind") === "change" && "changes only",
    query.get("kind") === "view" && "leads opened only",
    query.get("from_day") && `from ${query.get("from_day")}`, query.get("to_day") && `to ${query.get("to_day")}`,
  ].filter(Boolean).join(", ") || "every change";
  const exported = new URLSearchParams(filter);
  page(mine, "Audit",
    chain_panel(verified, digests.items[0]),
    h("h2", {}, "Impersonation sessions"),
    h("p", { class: "muted" }, "The latest 10, newest first. Open one for its changes and its export. ",
      h("a", { href: "#/sessions" }, "Every session, by admin, agent and date →")),
    sessions_table(sessions.items, "Impersonation sessions"),
    h("h2", { id: "changes", tabindex: "-1" }, "Changes, field by field"), form, only,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "quiet", onclick: () => download("csv", exported, described, "changes") }, "Export these changes (CSV)"),
      h("button", { type: "button", class: "quiet", onclick: () => download("ndjson", exported, described, "changes") }, "Export these changes (NDJSON)")),
    h("div", { id: "changes-table" },
      table("Changes, newest first", ["When", "Who", "What", "Field", "Before → after"], change_rows(changes.items, true), "No changes match.")),
    pager("#/audit", query, changes.next_cursor, changes.items.length));
  if (location.hash.endsWith("#changes") || query.get("cursor")) {
    const heading = document.getElementById("changes");
    if (heading) { heading.scrollIntoView(); heading.focus({ preventScroll: true }); }
  }
}

async function session(id) {
  const mine = ticket;
  const [{ body: s }] = await Promise.all([api("GET", `/api/audit/impersonations/${id}`), load_people()]);
  const newest = [...s.changes].reverse();
  const filter = new URLSearchParams({ impersonation_id: id });
  const what = `the session of ${s.admin.name} as ${s.subject.name}`;
  const minutes = s.ended_at ? Math.max(1, Math.round((new Date(s.ended_at) - new Date(s.started_at)) / 60000)) : null;
  page(mine, `${s.admin.name} as ${s.subject.name}`,
    h("p", {}, h("a", { href: reads_audit() ? "#/audit" : "#/me/impersonations" }, "← Sessions")),
    h("dl", { class: "card facts" },
      h("dt", {}, "Reason"), h("dd", {}, s.reason || "—"),
      h("dt", {}, "Mode"), h("dd", {}, s.mode === "view" ? "View only: nothing could be changed" : "Log in as user: could change what the agent can"),
      h("dt", {}, "Started"), h("dd", {}, when(s.started_at)),
      h("dt", {}, "Ended"), h("dd", {}, s.ended_at ? `${when(s.ended_at)} (${pretty(s.end_reason)}, ${plural(minutes, "minute")})` : "ongoing"),
      h("dt", {}, "Changes"), h("dd", {}, s.change_count),
      h("dt", {}, "Leads opened"), h("dd", {}, s.changes.filter((c) => c.kind === "view").length),
      s.reverted ? [h("dt", {}, "Reverted"), h("dd", {}, "Yes: see the audit's changes by the admin who reverted it")] : null),
    h("div", { class: "actions" },
      h("a", { class: "button quiet", href: then_link(s, s.started_at) }, "See what the agent saw at the start"),
      s.ended_at ? h("a", { class: "button quiet", href: then_link(s, s.ended_at) }, "See what the agent saw at the end") : null),
    reads_audit() ? h("div", { class: "actions" },
      h("button", { type: "button", class: "quiet", onclick: () => download("csv", filter, what, "session") }, "Export this session (CSV)"),
      h("button", { type: "button", class: "quiet", onclick: () => download("ndjson", filter, what, "session") }, "Export this session (NDJSON)"),
      manages() && s.ended_at && s.change_count > 0 && !s.reverted
        ? h("button", { type: "button", class: "danger", onclick: () => revert_session(s) }, "Revert this session…") : null)
      : null,
    table("Changes and leads opened in this session, newest first", ["When", "What", "Field", "Before → after"], change_rows(newest, false),
      "Nothing was changed or opened in this session."));
}

/** The agent's screen at a moment of a session, with its start and end at hand. */
function then_link(s, at) {
  const q = new URLSearchParams({ subject: s.subject.id, at, start: s.started_at, session: s.id });
  if (s.ended_at) q.set("end", s.ended_at);
  return `#/then?${q}`;
}

/** What a user saw at a past moment: their Lead Manager, one of their leads, or
 * their settings and templates, as the server folds them from the log. Read only.
 * `subject` (default: me), `at` (a time; none: now), `show` (leads or settings),
 * `lead`, and the Lead Manager's stage and sort; `start` and `end` of a session. */
async function then_view(params) {
  const mine = ticket;
  const query = new URLSearchParams(params);
  const subject = query.get("subject") || me_id();
  const at = query.get("at") || "";
  const show = query.get("show") === "settings" ? "settings" : "leads";
  const lead_id = query.get("lead");
  const link = (changes) => {
    const next = new URLSearchParams(query);
    for (const [key, value] of Object.entries(changes)) if (value) next.set(key, value); else next.delete(key);
    if (!("cursor" in changes)) { next.delete("cursor"); next.delete("trail"); }
    return `#/then?${next}`;
  };
  const asked = new URLSearchParams({ subject_id: subject });
  if (at) asked.set("at", at);
  let path = "/api/audit/view/settings";
  if (show === "leads" && lead_id) path = `/api/audit/view/leads/${encodeURIComponent(lead_id)}`;
  else if (show === "leads") {
    path = "/api/audit/view/leads";
    for (const key of ["stage", "cursor"]) if (query.get(key)) asked.set(key, query.get(key));
    asked.set("sort", query.get("sort") || "-updated_at");
  }
  if (reads_audit()) await load_people();
  // Named from the server's users (never from the address).
  const name = subject === me_id() ? state.me.user.name : person(subject);
  // A moment that shows nothing keeps the page, with what to do, in words.
  let body = null;
  let why = null;
  try {
    ({ body } = await api("GET", `${path}?${asked}`));
  } catch (problem) {
    if (problem.handled || ![404, 422].includes(problem.status)) throw problem;
    const field = ((problem.body && problem.body.errors) || [])[0];
    why = problem.status === 404
      ? (lead_id ? `Not shown: this lead did not exist yet at that moment, or was not ${name}'s to see then.`
        : `Nothing to show: ${name} had no account yet at that moment.`)
      : field && field.field === "at" ? "That is not a moment this page can show: pick a date and time (or a log position up to now)."
        : field && field.field === "subject_id" ? "This address names no user of your site."
          : "This address is not one the console makes: open the page again from a session.";
  }
  // `at` may be a time or a log position.
  const position_asked = /^\d+$/.test(at);
  const picker = h("input", { type: "datetime-local", name: "at", step: 1, value: at && !position_asked ? wall(at) : "" });
  const moments = h("form", { class: "toolbar", "aria-label": "When", onsubmit: (e) => {
    e.preventDefault();
    if (picker.value) go(link({ at: zoned(picker.value) }));
    else say("Pick a date and time first.");
  } },
  h("label", {}, `When (${zone().replaceAll("_", " ")})`, picker), h("button", { type: "submit" }, "Show"),
  query.get("start") ? h("a", { class: "button quiet", href: link({ at: query.get("start") }) }, "At the session's start") : null,
  query.get("end") ? h("a", { class: "button quiet", href: link({ at: query.get("end") }) }, "At the session's end") : null,
  h("a", { class: "button quiet", href: link({ at: "" }) }, "Now"));
  const tabs = h("nav", { class: "chips", "aria-label": "Screens" },
    h("a", { class: "chip", href: link({ show: "", lead: "" }), "aria-current": show === "leads" && !lead_id ? "page" : null }, "Lead Manager"),
    h("a", { class: "chip", href: link({ show: "settings", lead: "" }), "aria-current": show === "settings" ? "page" : null }, "Settings and templates"));
  const back = query.get("session")
    ? h("p", {}, h("a", { href: `#/audit/${encodeURIComponent(query.get("session"))}` }, "← The session")) : null;
  if (!body) {
    page(mine, `What ${name} saw`, back, moments, tabs, h("p", { class: "empty card", role: "status" }, why));
    return;
  }
  const to_come = at && !position_asked && new Date(at).getTime() > Date.now();
  const moment = h("p", { class: "muted" },
    !at || to_come ? `As it is now${to_come ? " (the time asked is still to come)" : ""}, at log position ${body.position}`
      : position_asked ? `As it was at log position ${body.position}`
        : `As it was at ${when(at, true)}, log position ${body.position}`,
    `. Folded from the log: ${at && !to_come ? "exactly what the screen showed then" : "what the screen shows"}; nothing here can be changed. Times are in ${zone().replaceAll("_", " ")}.`);
  let content;
  if (show === "settings") {
    content = [h("dl", { class: "card facts" }, SETTINGS.map(([key, label]) => [
      h("dt", {}, label), h("dd", { class: "body" }, value_text(key, body.settings[key]))])),
    h("h2", {}, "Templates"),
    table("Templates then", ["Kind", "Name", "Subject", "Body"], body.templates.map((t) => h("tr", { "data-template": t.name },
      h("td", {}, t.kind), h("td", {}, t.name), h("td", {}, t.subject || ""), h("td", {}, t.body))), "No templates then.")];
  } else if (lead_id) {
    const lead = body;
    const by = (item) => (item.author_name ? `${item.author_name} · ` : "");
    const gone = (text) => (text === null ? h("span", { class: "muted" }, "[erased]") : text);
    content = [h("p", {}, h("a", { href: link({ lead: "" }) }, "← Lead Manager then")),
      h("dl", { class: "card facts", "aria-label": "The lead then" },
        h("dt", {}, "Name"), h("dd", {}, gone(lead.name)),
        h("dt", {}, "Email"), h("dd", {}, lead.erased ? gone(null) : lead.email || "—"),
        h("dt", {}, "Phone"), h("dd", {}, lead.erased ? gone(null) : lead.phone || "—"),
        h("dt", {}, "Source"), h("dd", {}, lead.source || "—"),
        h("dt", {}, "Stage"), h("dd", {}, pretty(lead.stage)),
        h("dt", {}, "Tags"), h("dd", {}, lead.tags.length ? lead.tags.map((t) => h("span", { class: "tag" }, t)) : "none"),
        h("dt", {}, "Updated"), h("dd", {}, when(lead.updated_at))),
      h("div", { class: "two" },
        h("section", { class: "card", "aria-labelledby": "then-notes" }, h("h2", { id: "then-notes" }, "Notes"),
          lead.notes.length ? h("ul", { class: "plain" }, lead.notes.map((n) => h("li", {}, h("p", { class: "body" }, gone(n.body)),
            h("span", { class: "muted" }, `${by(n)}${when(n.created_at)}`)))) : h("p", { class: "muted" }, "No notes then.")),
        h("section", { class: "card", "aria-labelledby": "then-tasks" }, h("h2", { id: "then-tasks" }, "Tasks"),
          lead.tasks.length ? h("ul", { class: "plain" }, lead.tasks.map((t) => h("li", {}, gone(t.title), " · due ", when(t.due_at), " ",
            t.completed_at ? h("span", { class: "badge" }, "Done") : null))) : h("p", { class: "muted" }, "No tasks then."))),
      h("section", { class: "card", "aria-labelledby": "then-comms" }, h("h2", { id: "then-comms" }, "Communications"),
        lead.communications.length ? h("ul", { class: "plain" }, lead.communications.map((c) => h("li", {},
          `${c.direction} ${c.channel}: `, gone(c.summary), " ", h("span", { class: "muted" }, `${by(c)}${when(c.created_at)}`))))
          : h("p", { class: "muted" }, "No calls, emails or texts then."))];
  } else {
    const counts = body.counts_by_stage;
    const all = Object.values(counts).reduce((a, b) => a + b, 0);
    const chips = h("div", { class: "chips", role: "group", "aria-label": "Stages then" },
      h("a", { class: "chip", href: link({ stage: "" }), "aria-current": query.get("stage") ? null : "true" }, "All", h("span", { class: "n" }, all)),
      STAGES.map((stage) => h("a", { class: "chip", href: link({ stage }), "aria-current": query.get("stage") === stage ? "true" : null },
        pretty(stage), h("span", { class: "n" }, counts[stage] || 0))));
    const rows = body.items.map((lead) => h("tr", { "data-lead": lead.id },
      h("td", {}, h("a", { href: link({ lead: lead.id }) }, lead.erased ? h("span", { class: "muted" }, "Erased lead") : lead.name)),
      h("td", {}, pretty(lead.stage)), h("td", {}, lead.email || ""), h("td", {}, lead.phone || ""),
      h("td", {}, lead.tags.map((t) => h("span", { class: "tag" }, t))),
      h("td", {}, when(lead.next_task_due_at)), h("td", {}, when(lead.updated_at))));
    const total = query.get("stage") ? counts[query.get("stage")] || 0 : all;
    content = [chips,
      table(`${name}'s leads then`, ["Name", "Stage", "Email", "Phone", "Tags", "Next task", "Updated"], rows,
        query.get("stage") ? "No leads in this stage then." : "No leads then."),
      // The next pages are read at this page's position, whatever comes meanwhile.
      pager("#/then", new URLSearchParams({ ...Object.fromEntries(query), at: at || String(body.position) }),
        body.next_cursor, body.items.length, total)];
  }
  page(mine, `What ${name} saw`, back, moments, moment, tabs, content);
}

const REVERT_ACTIONS = { revert: "Put back", conflict: "Left alone: changed since", not_revertible: "Cannot be undone" };

/** "Revert this session": a reason, the plan (a dry run, which changes nothing),
 * then, confirmed, the revert itself; the page then shows the session again. */
function revert_session(s) {
  const reason = h("textarea", { name: "reason", required: true, maxlength: 500 });
  const plan = h("div", { class: "plan" });
  const go_on = h("button", { type: "button", class: "danger", hidden: true }, "Revert");
  const form = h("form", { method: "dialog", onsubmit: async (e) => {
    e.preventDefault();
    const planned = await attempt(() => api("POST", `/api/audit/impersonations/${s.id}/revert`,
      { reason: reason.value, dry_run: true }), null, form);
    if (!planned) return;
    const items = planned.body.plan;
    const rows = items.map((i) => h("tr", {},
      h("td", {}, `${pretty(i.entity_type)} `, i.entity_type === "lead" ? person_or_label(s, i) : ""),
      h("td", {}, field_name(i.field)),
      h("td", {}, value_text(i.field, i.current)),
      h("td", {}, value_text(i.field, i.target)),
      h("td", {}, REVERT_ACTIONS[i.action] || i.action, i.why ? h("span", { class: "muted" }, ` (${i.why})`) : null)));
    const count = items.filter((i) => i.action === "revert").length;
    plan.replaceChildren(h("p", {}, `${plural(count, "change")} will be put back; the others are left as they are.`),
      table("What the revert does, newest change first", ["What", "Field", "Now", "Back to", "Revert"], rows, "Nothing to revert."));
    go_on.hidden = count === 0;
  } },
  h("p", { class: "muted" }, "Each change of the session that nothing has changed since is put back, as you, on the agent's account. First see the plan; nothing changes until you confirm."),
  h("label", {}, "Reason (recorded)", reason), plan,
  h("div", { class: "actions" }, h("button", { type: "submit", class: "quiet" }, "Show the plan"), go_on,
    h("button", { type: "button", class: "quiet", onclick: () => box.close() }, "Cancel")));
  go_on.onclick = async () => {
    if (!confirm(`Revert the session of ${s.admin.name} as ${s.subject.name}?`)) return;
    const done = await attempt(() => api("POST", `/api/audit/impersonations/${s.id}/revert`, { reason: reason.value }), null, form);
    if (!done) return;
    box.close();
    const back = done.body.plan.filter((i) => i.action === "revert").length;
    go(`#/audit/${s.id}`, `Reverted: ${plural(back, "change")} put back.`, true);
  };
  const box = dialog(`Revert the session of ${s.admin.name} as ${s.subject.name}`, form);
  reason.focus();
}

/** The lead a planned item is about, by the name the session's changes gave it. */
function person_or_label(s, i) {
  const named = s.changes.find((c) => c.entity_id === i.entity_id && c.entity_label);
  return named ? named.entity_label : "";
}

/** One event of the log, as recorded (where the chain check points). */
async function event_at(position) {
  const mine = ticket;
  const { body } = await api("GET", `/api/events?after=${Math.max(0, Number(position) - 1)}&limit=1`);
  const e = body.items && body.items[0];
  page(mine, `Event at position ${position}`,
    h("p", {}, h("a", { href: "#/audit" }, "← Audit")),
    e ? h("pre", { class: "card event" }, JSON.stringify(e, null, 2)) : h("p", { class: "empty card" }, "No event is readable at this position."));
}

/** Every impersonation session, filtered by admin, agent and dates, page by page. */
async function all_sessions(params) {
  const mine = ticket;
  const query = new URLSearchParams(params);
  const filter = filters_of(query, ["admin_id", "subject_id", "cursor"]);
  const [{ body }] = await Promise.all([api("GET", `/api/audit/impersonations?${filter}`), load_people()]);
  const people = [...state.people.values()].sort((a, b) => a.name.localeCompare(b.name));
  const choose = (key, label, users) => choice(query, key, label, users.map((u) => [u.id, u.name]));
  const day = (key, label) => day_filter(query, key, label);
  const form = h("form", { class: "toolbar", role: "search", "aria-label": "Filter the sessions", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) next.set(key, value);
    go(`#/sessions?${next}`);
  } },
  choose("admin_id", "Admin", people.filter((u) => ["owner", "admin"].includes(u.role))),
  choose("subject_id", "Logged in as", people.filter((u) => u.role === "agent")),
  day("from_day", "Started from"), day("to_day", "to"), h("button", { type: "submit" }, "Show sessions"));
  page(mine, "Impersonation sessions", h("p", {}, h("a", { href: "#/audit" }, "← Audit")), form,
    sessions_table(body.items, "Impersonation sessions, newest first"),
    pager("#/sessions", query, body.next_cursor, body.items.length));
}

async function my_impersonations() {
  const mine = ticket;
  const { body } = await api("GET", "/api/me/impersonations?limit=200");
  page(mine, "Who logged in as me", sessions_table(body.items, "Sessions in which someone logged in as me"));
}

// --- routing -------------------------------------------------------------------

/** Why the page `name` is not for whoever the console shows now, if it is not. */
function refusal(name, id) {
  const real_human = ["users", "site", "audit", "event", "sessions", "me", "account", "then"];
  if (impersonating() && real_human.includes(name)) {
    return `Not while logged in as ${state.me.user.name}: Return to Admin first.`;
  }
  const allowed = {
    leads: role() !== "auditor", settings: role() !== "auditor",
    users: ["owner", "admin", "auditor"].includes(role()), site: manages(),
    // An agent opens the sessions in which someone logged in as them.
    audit: reads_audit() || (Boolean(id) && role() === "agent"), event: reads_audit(), sessions: reads_audit(), me: role() === "agent",
  };
  return name in allowed && !allowed[name] ? "Not allowed: this page is not for your role." : null;
}

async function route(forced) {
  const hash = forced || location.hash || "#/";
  const [path, search] = hash.slice(1).split("#")[0].split("?");
  const parts = path.split("/").filter(Boolean);
  ticket += 1;
  const mine = ticket;
  if (!state.token) { signin(); return; }
  if (!forced) busy(true);
  try {
    if (!state.me) await load_me();
    chrome();
    const q = new URLSearchParams(search || "");
    const refused = refusal(parts[0], parts[1]);
    if (refused) {
      say(refused);
      if (mine === ticket) { busy(false); main.replaceChildren(); document.title = "Not allowed · CRM"; }
      return;
    }
    if (parts[0] === "leads" && parts[1]) await lead(parts[1]);
    else if (parts[0] === "leads") await leads(q);
    else if (parts[0] === "users") await users();
    else if (parts[0] === "site") await site_rules();
    else if (parts[0] === "settings") await settings();
    else if (parts[0] === "account") await account();
    else if (parts[0] === "notifications") await notifications();
    else if (parts[0] === "audit" && parts[1]) await session(parts[1]);
    else if (parts[0] === "audit") await audit(q);
    else if (parts[0] === "event") await event_at(parts[1]);
    else if (parts[0] === "me") await my_impersonations();
    else if (parts[0] === "sessions") await all_sessions(q);
    else if (parts[0] === "then") await then_view(q);
    else go(landing());
  } catch (problem) {
    if (mine === ticket) busy(false);
    if (problem.handled || problem.status === 401 || mine !== ticket) return;
    if (problem.status === 403) say(`Not allowed: ${sentence(problem.message)}`);
    else if (problem.status === 404) say("Not found: it does not exist, or it is not yours to see.");
    else say(sentence(problem.message));
    document.title = `${problem.status === 404 ? "Not found" : "Not shown"} · CRM`;
    main.replaceChildren();
  }
}

$("#return-to-admin").addEventListener("click", async () => {
  const back = await attempt(() => api("DELETE", "/api/impersonation"));
  if (!back) return;
  set_me(back.body);
  await load_zone();
  go("#/users", "Back to your own account.", true);
});
$("#sign-out").addEventListener("click", async () => {
  await attempt(() => api("POST", "/api/logout"));
  forget();
  go("#/signin", "Signed out.", true);
});
$("#bell").addEventListener("click", () => go("#/notifications"));
window.addEventListener("hashchange", arrive);
route();
