// The operator console (/admin): accounts (search, paging, balance, keys, grants and
// adjustments), usage by day/model/operation, costs and margin, the policy in force, unbilled
// calls and outgoing webhooks — all read from the admin API with the console's session.
import {
  api, optional, features, isOn, el, clear, show, say, fmtAmount, fmtSeconds, fmtTime,
  idempotencyKey, problemText,
} from "./api.js";
import { categoryBars, dailyBars } from "./chart.js";

const $ = (id) => document.getElementById(id);
const unit = document.body.dataset.unit || "s";
const timeUnit = unit === "s";
const fmt = (value) => fmtAmount(value, unit);
// Ledger units (the admin API's `*_ms` members) in the unit: ms of AI time, micro-units of a
// currency, tokens (policies/units.py).
const fromLedger = (v) => Number(v || 0) / (timeUnit ? 1000 : unit === "tokens" ? 1 : 1_000_000);
// The balance document's amount `name`: `<name>_seconds` (time) or `<name>` (unit document).
const amountOf = (doc, name) => Number((timeUnit ? doc[`${name}_seconds`] : doc[name]) ?? 0);
// A limit for the key API from a form field: empty = none.
const limitValue = (id) => ($(id).value.trim() === "" ? null : Number($(id).value));
let feats = null;
let accountsCursor = null;
let current = null; // the account shown
const keys = { grant: null, adjust: null }; // one idempotency key per filled-in form

// ---- accounts ---------------------------------------------------------------------------------

async function loadAccounts(more = false) {
  const q = $("search").value.trim();
  const params = new URLSearchParams({ limit: "20" });
  if (q) params.set("q", q);
  if (more && accountsCursor) params.set("cursor", accountsCursor);
  const page = await api(`/v1/admin/accounts?${params}`);
  const list = $("accounts-list");
  if (!more) clear(list);
  for (const a of page.accounts) {
    list.append(el("li", {}, el("button", { type: "button", class: "link", dataset: { account: a.account_id } },
      a.account_id), ` ${a.plan_key} · ${a.subscription_status} · since ${fmtTime(a.created_at)}`));
  }
  if (!list.firstChild) list.append(el("li", {}, "No account matches."));
  accountsCursor = page.next_cursor;
  show($("accounts-more"), Boolean(accountsCursor));
}

async function createAccount(event) {
  event.preventDefault();
  const plan = $("new-plan").value.trim();
  try {
    const created = await api("/v1/admin/accounts", { method: "POST", body: plan ? { plan } : {} });
    $("search").value = created.account_id;
    await loadAccounts();
    await openAccount(created.account_id);
  } catch (error) {
    alertIn($("accounts"), problemText(error));
  }
}

function alertIn(section, text) {
  let box = section.querySelector(".error");
  if (!box) section.append(box = el("p", { class: "error", role: "alert" }));
  box.textContent = text;
}

async function openAccount(accountId) {
  current = accountId;
  const doc = await api(`/v1/admin/accounts/${encodeURIComponent(accountId)}`);
  $("account-id").textContent = accountId;
  const t = doc.balance.totals;
  $("acct-total").textContent = fmt(amountOf(t, "total"));
  $("acct-total").dataset.value = String(amountOf(t, "total"));
  $("acct-available").textContent = fmt(amountOf(t, "available"));
  $("acct-plan").textContent = `${doc.balance.plan_key} (${doc.balance.subscription_status})`;
  const rows = clear($("acct-buckets"));
  for (const b of [...doc.balance.buckets.daily, ...doc.balance.buckets.paid]) {
    rows.append(el("tr", {}, el("td", {}, b.source), el("td", {}, fmt(timeUnit ? b.seconds : b.amount)), el("td", {}, fmtTime(b.expires_at))));
  }
  const list = clear($("keys"));
  for (const k of doc.api_keys) {
    const limits = [k.limit_day != null ? `${fmt(k.limit_day)}/day` : "", k.limit_month != null ? `${fmt(k.limit_month)}/month` : ""]
      .filter(Boolean).join(", ") || "no limit";
    const item = el("li", { "data-testid": "admin-key-row", dataset: { keyId: k.key_id } },
      el("code", {}, `${k.prefix}…`), ` ${k.key_id} · created ${fmtTime(k.created_at)} · `,
      el("span", { class: "limits", "data-testid": "admin-key-limits" }, limits));
    if (k.revoked_at) item.append(` · revoked ${fmtTime(k.revoked_at)}`);
    else {
      item.append(" ", el("button", { type: "button", class: "link", dataset: { limits: k.key_id },
        "data-testid": "admin-key-set-limits" }, "Set the limits above"),
      " ", el("button", { type: "button", class: "link", dataset: { revoke: k.key_id } }, "Revoke"));
    }
    list.append(item);
  }
  if (!doc.api_keys.length) list.append(el("li", {}, "No keys."));
  show($("account"), true);
}

async function createKey() {
  try {
    // POST …/keys with KeyLimits (gateway/api/admin.py): per-day/per-month limits in the unit.
    const body = {};
    const day = limitValue("key-limit-day"), month = limitValue("key-limit-month");
    if (day !== null) body.limit_day = day;
    if (month !== null) body.limit_month = month;
    const created = await api(`/v1/admin/accounts/${encodeURIComponent(current)}/keys`, { method: "POST", body });
    $("key-limit-day").value = "";
    $("key-limit-month").value = "";
    const box = $("key-new");
    box.replaceChildren("New key (shown once — copy it now): ", el("code", { "data-testid": "admin-new-key" }, created.key));
    show(box, true);
    await openAccount(current);
  } catch (error) {
    alertIn($("account"), problemText(error));
  }
}

// PATCH /v1/admin/keys/{keyId} (gateway/api/admin_budgets.py): replace the key's limits with
// the form's (an empty field = no limit).
async function setKeyLimits(keyId) {
  try {
    await api(`/v1/admin/keys/${encodeURIComponent(keyId)}`, {
      method: "PATCH", body: { limit_day: limitValue("key-limit-day"), limit_month: limitValue("key-limit-month") },
    });
    $("key-limit-day").value = "";
    $("key-limit-month").value = "";
    await openAccount(current);
  } catch (error) {
    alertIn($("account"), problemText(error));
  }
}

async function revokeKey(keyId) {
  if (!window.confirm(`Revoke ${keyId}? Calls with it stop at once.`)) return;
  try {
    await api(`/v1/admin/keys/${encodeURIComponent(keyId)}`, { method: "DELETE" });
    await openAccount(current);
  } catch (error) {
    alertIn($("account"), problemText(error));
  }
}

// A money-moving form: one idempotency key per filled-in form, kept until the form is changed or
// the write succeeded, so a double submit (or a retry after a lost answer) applies once.
function moneyForm(form, name, build, path, done) {
  form.addEventListener("input", () => { keys[name] = null; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = form.querySelector("[role=status]");
    keys[name] = keys[name] || idempotencyKey(`console-${name}`);
    const body = { ...build(), idempotency_key: keys[name] };
    const account = current;
    try {
      const result = await api(path(account), { method: "POST", body });
      say(status, done(result, body), "ok");
      form.reset();
      keys[name] = null;
      await openAccount(account);
      loadStats().catch(report);
    } catch (error) {
      say(status, problemText(error), "error");
    }
  });
}

// ---- usage, costs, policy, unbilled, webhooks -------------------------------------------------

function groupRows(tbody, groups) {
  clear(tbody);
  for (const g of groups) {
    tbody.append(el("tr", {}, el("td", {}, g.key ?? "(unknown)"), el("td", {}, g.calls),
      el("td", {}, `${g.input_tokens} / ${g.output_tokens}`), el("td", {}, fmt(fromLedger(g.charged_ms))),
      el("td", {}, fmt(fromLedger(g.unbilled_ms)))));
  }
  if (!groups.length) tbody.append(el("tr", {}, el("td", { colspan: 5 }, "No calls in this period.")));
}

async function loadStats() {
  const period = $("stats-period").value;
  const daily = await api(`/v1/admin/stats/daily?period=${period}`);
  dailyBars($("daily-chart"), daily.days.map((d) => d.date), daily.days.map((d) => d.charged),
    `Charged (${daily.unit})`, (v) => fmtAmount(v, daily.unit));
  const rows = clear($("by-operation"));
  for (const o of daily.by_operation) {
    rows.append(el("tr", {}, el("td", {}, o.operation), el("td", {}, o.calls), el("td", {}, fmtAmount(o.charged, daily.unit))));
  }
  if (!daily.by_operation.length) rows.append(el("tr", {}, el("td", { colspan: 3 }, "No calls in this period.")));
  categoryBars($("ops-chart"), daily.by_operation.map((o) => o.operation), [
    { label: `Charged (${daily.unit})`, values: daily.by_operation.map((o) => Number(o.charged)) },
    { label: "Calls", values: daily.by_operation.map((o) => o.calls), scale: "b", format: wholeNumber },
  ], (v) => fmtAmount(v, daily.unit), "Operation");
  await loadCosts(period === "day" ? "day" : "month");
}

// Usage by model reads every usage record of the period (GET /v1/admin/stats/usage): on demand.
async function loadByModel() {
  const usage = await api(`/v1/admin/stats/usage?period=${$("stats-period").value}`);
  groupRows($("by-model"), usage.by_model);
  $("by-model").closest(".scroll").scrollLeft = 0; // reaching the link may have scrolled it
  categoryBars($("model-usage-chart"), usage.by_model.map((g) => g.key ?? "(unknown)"), [
    { label: `Charged (${unit})`, values: usage.by_model.map((g) => fromLedger(g.charged_ms)) },
    { label: "Calls", values: usage.by_model.map((g) => g.calls), scale: "b", format: wholeNumber },
  ], fmt, "Model");
}

// USD on a chart: cents from 1 USD up, else two significant digits (a call costs fractions of
// a cent), so axis ticks stay short and distinct.
function usdShort(v) {
  const n = Number(v);
  if (n === 0) return "0 USD";
  return `${Math.abs(n) >= 1 ? n.toFixed(2) : String(Number(n.toPrecision(2)))} USD`;
}

// Axis ticks of counts: whole numbers only (a fractional tick of calls reads as nonsense).
function wholeNumber(v) {
  return Number.isInteger(v) ? String(v) : "";
}

// Provider cost, and what was charged and the margin where the unit is USD, per model (one row
// per provider and model; the provider is named only where two share a model name). In a
// time or token deployment the charged amount gets its own axis, in the unit.
function modelCostChart(doc) {
  const groups = doc.by_model;
  const names = groups.map((g) => g.model);
  const labels = groups.map((g, i) => (names.indexOf(g.model) !== names.lastIndexOf(g.model) || !g.model
    ? `${g.provider}/${g.model || "?"}` : names[i]));
  const series = [{ label: "Provider cost (USD)", values: groups.map((g) => g.provider_cost_usd) }];
  if (groups.length && groups.every((g) => g.charged_usd !== null)) {
    series.push({ label: "Charged (USD)", values: groups.map((g) => g.charged_usd) },
      { label: "Margin (USD)", values: groups.map((g) => g.margin_usd) });
  } else {
    series.push({ label: `Charged (${doc.unit})`, values: groups.map((g) => Number(g.charged)), scale: "b",
      format: (v) => fmtAmount(v, doc.unit) });
  }
  categoryBars($("model-cost-chart"), labels, series, usdShort, "Model");
}

async function loadCosts(period) {
  if (!isOn(feats, "costs")) return show($("costs"), false);
  const doc = await optional(`/v1/admin/costs/summary?period=${period}`);
  // GET /v1/admin/costs/summary (gateway/api/costs.py AdminCostSummary): by_model groups.
  if (!doc || !Array.isArray(doc.by_model)) return show($("costs"), false);
  const usd = (v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(6)} USD`);
  const rows = clear($("costs-rows"));
  for (const g of doc.by_model) {
    rows.append(el("tr", { "data-testid": "admin-cost-row" }, el("td", {}, g.provider), el("td", {}, g.model),
      el("td", {}, g.calls), el("td", {}, usd(g.provider_cost_usd)), el("td", {}, fmtAmount(g.charged, doc.unit)),
      el("td", {}, usd(g.margin_usd))));
  }
  if (!doc.by_model.length) rows.append(el("tr", {}, el("td", { colspan: 6 }, "No calls in this period.")));
  $("costs-total").textContent = `Provider cost ${usd(doc.provider_cost_usd)}; charged ` +
    `${fmtAmount(doc.charged, doc.unit)}; margin ${usd(doc.margin_usd)} (${fmtTime(doc.from)} – ${fmtTime(doc.to)}).`;
  show($("costs"), true);
  modelCostChart(doc);
  await loadCostChart(period);
}

// Provider cost (bars) and margin (line, USD deployments) per UTC day: GET /v1/admin/costs/daily
// (gateway/api/costs.py AdminCostDaily); the chart stays hidden when the endpoint is absent.
async function loadCostChart(period) {
  const chart = $("cost-chart");
  const doc = await optional(`/v1/admin/costs/daily?period=${period}`);
  if (!doc || !Array.isArray(doc.days)) return show(chart, false);
  show(chart, true);
  const margins = doc.days.map((d) => d.margin_usd);
  const lines = margins.some((m) => m !== null) ? [{ label: "Margin (USD)", values: margins }] : [];
  dailyBars(chart, doc.days.map((d) => d.day), doc.days.map((d) => d.provider_cost_usd),
    "Provider cost (USD)", usdShort, lines);
}

async function loadPolicy() {
  const p = await api("/v1/admin/policy");
  const facts = clear($("policy-facts"));
  const fact = (name, value) => facts.append(el("div", {}, el("dt", {}, name), el("dd", {}, value)));
  for (const f of p.files) fact("File", `${f.path} (modified ${fmtTime(f.modified_at)})`);
  fact("Catalog version", p.catalog_version);
  fact("Unit", p.unit);
  fact("Plans", p.plans.join(", "));
  fact("Default plan", p.default_plan);
  fact("Routes", p.routes);
  const error = $("policy-error");
  error.textContent = p.last_reload_error ? `Last reload failed (the previous policy is still served): ${p.last_reload_error}` : "";
  show(error, Boolean(p.last_reload_error));
}

async function loadUnbilled() {
  const u = await api("/v1/admin/unbilled?limit=20");
  $("unbilled-summary").textContent = u.count
    ? `${u.count} call(s), ${fmt(fromLedger(u.total_ms))} to charge, waiting in ${u.spool_path}: run \`gateway reconcile\`.`
    : `Nothing waits for reconciliation (${u.spool_path}).`;
  const list = clear($("unbilled-list"));
  for (const c of u.calls) list.append(el("li", {}, `${c.request_id} · ${c.account_id} · ${c.operation} · ${fmt(fromLedger(c.charge_ms))}`));
  if (u.error) list.append(el("li", { class: "error" }, u.error));
}

async function loadWebhooks() {
  if (!isOn(feats, "webhooks")) return;
  // GET /v1/admin/webhook-endpoints → {endpoints}; …/{id}/deliveries → {deliveries}, newest
  // first (gateway/api/webhook_endpoints.py).
  const doc = await optional("/v1/admin/webhook-endpoints");
  if (!doc || !Array.isArray(doc.endpoints)) return;
  const endpoints = doc.endpoints;
  const list = clear($("hooks-list"));
  for (const ep of endpoints) {
    const item = el("li", { "data-testid": "hook-endpoint" }, el("code", {}, ep.url),
      ` · ${ep.event_types.join(", ")}`, ep.description ? ` · ${ep.description}` : "");
    list.append(item);
    const page = await optional(`/v1/admin/webhook-endpoints/${encodeURIComponent(ep.id)}/deliveries?limit=10`);
    const rows = page && Array.isArray(page.deliveries) ? page.deliveries : [];
    item.append(el("ul", {}, rows.length ? rows.map((d) => el("li", { "data-testid": "hook-delivery", dataset: { status: d.status } },
      `${d.event_type} · ${d.status} · ${d.attempts} attempt(s)` +
      (d.last_status_code ? ` · last HTTP ${d.last_status_code}` : "") +
      (d.last_error ? ` · ${d.last_error}` : "") +
      (d.status === "pending" && d.next_attempt_at ? ` · next ${fmtTime(d.next_attempt_at)}` : "") +
      ` · ${fmtTime(d.delivered_at || d.created_at)}`)) : el("li", {}, "No deliveries yet.")));
  }
  if (!endpoints.length) list.append(el("li", {}, "No endpoints registered."));
  show($("webhooks"), true);
}

function report(error) {
  alertIn($("stats"), `Some data could not be loaded: ${problemText(error)}`);
}

async function main() {
  feats = await features();
  if (!timeUnit) {
    $("grant-label").textContent = unit === "tokens" ? "Tokens" : `Amount (${unit})`;
    $("grant-minutes").step = unit === "tokens" ? "1" : "0.000001";
    $("grant-minutes").min = unit === "tokens" ? "1" : "0.000001";
  }
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); loadAccounts().catch(report); });
  $("accounts-more").addEventListener("click", () => loadAccounts(true).catch(report));
  $("accounts-list").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-account]");
    if (button) openAccount(button.dataset.account).catch(report);
  });
  $("new-account-form").addEventListener("submit", createAccount);
  $("key-create").addEventListener("click", createKey);
  $("keys").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-revoke]");
    if (button) revokeKey(button.dataset.revoke);
    const limits = e.target.closest("button[data-limits]");
    if (limits) setKeyLimits(limits.dataset.limits);
  });
  // the amount in the deployment's unit: minutes/seconds of AI time, `amount` (decimal string,
  // exact) in a currency, whole `tokens` (issue 10)
  const amountField = (timeName, raw) => (unit === "s" ? { [timeName]: Number(raw) }
    : unit === "tokens" ? { tokens: Number(raw) } : { amount: String(raw) });
  const granted = (body) => (unit === "s" ? `${body.minutes} min` : fmtAmount(body.tokens ?? body.amount, unit));
  moneyForm($("grant-form"), "grant", () => ({
    ...amountField("minutes", $("grant-minutes").value), source: $("grant-source").value, reason: $("grant-reason").value,
  }), (a) => `/v1/admin/accounts/${encodeURIComponent(a)}/grants`,
  (r, body) => (r.replayed ? `Already applied (${granted(body)}); nothing credited twice.` : `Credited ${granted(body)}: “${body.reason}”.`));
  const applied = (r, name) => (unit === "s" ? fmtSeconds(r[`${name}_ms`] / 1000) : fmtAmount(r[name], unit));
  moneyForm($("adjust-form"), "adjust", () => ({
    ...amountField("seconds", $("adjust-seconds").value), reason: $("adjust-reason").value,
  }), (a) => `/v1/admin/accounts/${encodeURIComponent(a)}/adjustments`,
  (r) => (r.replayed ? "Already applied." : `Applied ${applied(r, "amount")}` +
    (r.unrecovered_ms ? ` (${applied(r, "unrecovered")} could not be taken back).` : ".")));
  $("stats-period").addEventListener("change", () => loadStats().catch(report));
  $("by-model").addEventListener("click", (e) => {
    if (e.target.id === "by-model-load") loadByModel().catch(report);
  });
  await Promise.all([loadAccounts(), loadStats(), loadPolicy(), loadUnbilled(), loadWebhooks()]
    .map((p) => p.catch(report)));
  document.body.dataset.ready = "1";
}

main();
