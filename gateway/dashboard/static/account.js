// The account page (/dashboard): balance, buckets and bonus, usage chart, costs, purchases,
// auto top-up, alerts, payment methods, invoices and history, all read from the public billing
// API with the session cookie; live updates from the billing stream (EventSource).
import {
  api, optional, features, isOn, el, clear, show, say, fmtAmount, fmtTime,
  safeRedirect, problemText,
} from "./api.js";
import { categoryBars, dailyBars } from "./chart.js";

const body = document.body;
const account = encodeURIComponent(body.dataset.accountId);
const unit = body.dataset.unit || "s";
const timeUnit = unit === "s";
// An amount of a document in the deployment's unit: `<name>_seconds` in a time deployment (the
// seeds' fields), `<name>` (the unit document's, issue 10) in a currency or tokens one.
const amountOf = (doc, name) => Number((timeUnit ? doc[`${name}_seconds`] : doc[name]) ?? 0);
const fmt = (value) => fmtAmount(value, unit);
const $ = (id) => document.getElementById(id);
let feats = null;
let eventsCursor = null;
let catalog = null;

// ---- balance ----------------------------------------------------------------------------------

// The balance's totals (`totals` of the balance document; in a time deployment also the
// `balance.updated` event's data, whose members are the same `*_seconds`).
function showTotals(totals) {
  const total = $("balance-total"), available = $("balance-available");
  total.dataset.value = String(amountOf(totals, "total"));
  total.dataset.unit = unit;
  total.textContent = fmt(amountOf(totals, "total"));
  available.dataset.value = String(amountOf(totals, "available"));
  available.dataset.unit = unit;
  available.textContent = fmt(amountOf(totals, "available"));
  const held = timeUnit ? totals.held_seconds : totals.held;
  if (held !== undefined) $("balance-held").textContent = fmt(held);
}

async function loadBalance() {
  const b = await api(`/v1/billing/balance/${account}`);
  showTotals(b.totals);
  $("balance-plan").textContent = `${b.plan_key} (${b.subscription_status})`;
  const rows = clear($("buckets"));
  const buckets = [...b.buckets.daily, ...b.buckets.paid].sort((x, y) => x.priority - y.priority);
  for (const k of buckets) {
    rows.append(el("tr", { "data-testid": "bucket-row", dataset: { bucketId: k.id } },
      el("td", {}, k.priority), el("td", {}, k.source), el("td", {}, fmt(timeUnit ? k.seconds : k.amount)),
      el("td", {}, fmtTime(k.expires_at)), el("td", {}, el("span", { class: `status ${k.status}` }, k.status))));
  }
  if (!buckets.length) rows.append(el("tr", {}, el("td", { colspan: 5 }, "No credit yet.")));
  const bonus = b.bonus || {};
  // Time: whole minutes (`*_minutes`); currency and tokens: amounts in the unit.
  const [daily, used, cap, show1] = timeUnit
    ? [bonus.daily_minutes, bonus.used_this_month_minutes, bonus.monthly_cap_minutes || 0, (v) => `${v} min`]
    : [bonus.daily, bonus.used_this_month, bonus.monthly_cap || 0, fmt];
  $("bonus-text").textContent = daily
    ? `${show1(daily)} a day; ${show1(used || 0)} granted this month` +
      (cap ? ` of a ${show1(cap)} cap.` : " (no monthly cap).")
    : "Your plan has no daily bonus.";
  const bar = $("bonus-progress");
  bar.max = cap || 1;
  bar.value = cap ? Math.min(cap, used || 0) : 0;
  show(bar, Boolean(cap));
  const change = b.scheduled_change;
  const warning = $("downgrade");
  if (change) {
    warning.textContent = `Your plan changes to ${change.new_plan} on ${fmtTime(change.effective_date)}.` +
      (change.will_discard_rollover
        ? ` ${timeUnit ? `${change.minutes_to_discard} min` : fmt(change.amount_to_discard)} of rolled-over credit will be discarded.`
        : "");
  }
  show(warning, Boolean(change));
}

// ---- usage and costs --------------------------------------------------------------------------

async function loadUsage() {
  const period = $("period").value;
  const u = await api(`/v1/billing/usage/${account}?period=${encodeURIComponent(period)}`);
  const days = u.daily_trend.map((d) => d.date);
  const values = u.daily_trend.map((d) => Number((timeUnit ? d.seconds : d.amount) ?? 0));
  const total = amountOf(u, "total");
  dailyBars($("usage-chart"), days, values, `Used (${unit})`, fmt);
  $("usage-chart").dataset.total = String(total);
  $("usage-chart").setAttribute("aria-label", `Usage by day: ${fmt(total)} in total`);
  $("usage-total").textContent = `${fmt(total)} used from ${fmtTime(u.from)} to ${fmtTime(u.to)}.`;
  const rows = clear($("usage-ops"));
  for (const [op, seconds] of Object.entries(u.by_operation)) {
    rows.append(el("tr", {}, el("td", {}, op), el("td", {}, u.count_by_operation[op] ?? 0), el("td", {}, fmt(seconds))));
  }
  if (!rows.firstChild) rows.append(el("tr", {}, el("td", { colspan: 3 }, "No usage in this period.")));
  const ops = Object.keys(u.by_operation);
  categoryBars($("usage-ops-chart"), ops, [
    { label: `Used (${unit})`, values: ops.map((op) => Number(u.by_operation[op])) },
    { label: "Calls", values: ops.map((op) => u.count_by_operation[op] ?? 0), scale: "b",
      format: (v) => (Number.isInteger(v) ? String(v) : "") },
  ], fmt, "Operation");
}

async function loadCosts() {
  const section = $("costs");
  // GET /v1/billing/costs/{id}/summary (gateway/api/costs.py CostSummary): providers' cost in
  // USD per provider and model; shown where the unit is a currency (issue 12).
  if (timeUnit || unit === "tokens") return show(section, false);
  const summary = await optional(`/v1/billing/costs/${account}/summary`);
  if (!summary || !Array.isArray(summary.breakdown)) return show(section, false);
  const rows = clear($("costs-rows"));
  for (const r of summary.breakdown) {
    rows.append(el("tr", { "data-testid": "cost-row" }, el("td", {}, r.provider), el("td", {}, r.model),
      el("td", {}, r.records), el("td", {}, r.tokens), el("td", {}, `${Number(r.cost).toFixed(6)} USD`),
      el("td", {}, r.unpriced_records)));
  }
  if (!summary.breakdown.length) rows.append(el("tr", {}, el("td", { colspan: 6 }, "No priced calls yet.")));
  const total = $("costs-total");
  total.dataset.value = String(summary.total_cost);
  total.textContent = `${Number(summary.total_cost).toFixed(6)} USD over ${summary.record_count} call(s), ` +
    `${summary.total_tokens} tokens.`;
  show(section, true);
}

// ---- history ----------------------------------------------------------------------------------

function eventRow(e) {
  const value = Number((timeUnit ? e.seconds : e.amount) ?? 0);
  const amount = value >= 0 ? `+${fmt(value)}` : fmt(value);
  return el("li", { "data-testid": "event-row", dataset: { eventId: e.id } },
    el("span", { class: "etype" }, e.type), " ", el("strong", {}, amount), " ",
    el("span", { class: "reason" }, e.reason), " ", el("time", { datetime: e.timestamp }, fmtTime(e.timestamp)));
}

async function loadEvents(more = false) {
  const query = more && eventsCursor ? `&cursor=${encodeURIComponent(eventsCursor)}` : "";
  const page = await api(`/v1/billing/events/${account}?limit=20${query}`);
  const list = $("events-list");
  if (!more) clear(list);
  for (const e of page.events) list.append(eventRow(e));
  if (!list.firstChild) list.append(el("li", {}, "Nothing yet."));
  eventsCursor = page.next_cursor;
  show($("events-more"), Boolean(eventsCursor));
}

// ---- buying -----------------------------------------------------------------------------------

// What a package grants: minutes (time), credits in the currency, or tokens.
function grants(p) {
  if (p.minutes !== undefined && p.minutes !== null) return `${p.minutes} min`;
  return fmt(p.credits ?? p.tokens ?? 0);
}

async function loadCatalog() {
  show($("buy"), isOn(feats, "payments"));
  const currency = $("currency").value;
  catalog = await api(`/v1/billing/catalog?currency=${encodeURIComponent(currency)}`);
  const notice = $("fallback-notice");
  if (catalog.currency_fallback_from) {
    notice.textContent = `Prices are not available in ${catalog.currency_fallback_from}; ` +
      `showing and charging ${catalog.currency}.`;
  }
  show(notice, Boolean(catalog.currency_fallback_from));
  const list = clear($("packages"));
  for (const p of catalog.packages) {
    list.append(el("li", {},
      el("span", {}, el("strong", {}, p.name), ` — ${grants(p)}`), " ",
      el("span", { class: "price" }, p.display_price_text), " ",
      el("button", { type: "button", "data-testid": "buy-package", dataset: { package: p.key } }, `Buy ${p.name}`)));
  }
  const select = $("topup-package");
  const chosen = select.value;
  clear(select);
  for (const p of catalog.packages) select.append(el("option", { value: p.key }, `${p.name} (${grants(p)})`));
  if (chosen) select.value = chosen;
}

async function buy(button) {
  const status = $("buy-status");
  button.disabled = true;
  say(status, "Opening Stripe Checkout…");
  try {
    const result = await api("/v1/billing/packages/purchase", {
      method: "POST", body: { package_key: button.dataset.package, currency: $("currency").value },
    });
    status.replaceChildren("Continue to ",
      el("a", { href: result.checkout_url, "data-testid": "checkout-link" }, "Stripe Checkout"),
      ` (${result.display_price_text}).`);
    safeRedirect(result.checkout_url);
  } catch (error) {
    say(status, problemText(error), "error");
  } finally {
    button.disabled = false;
  }
}

// ---- settings ---------------------------------------------------------------------------------

async function loadTopUp() {
  if (!isOn(feats, "auto_topup")) return show($("topup"), false);
  const t = await optional(`/v1/billing/auto-topup/${account}`);
  if (!t) return show($("topup"), false);
  $("topup-enabled").checked = Boolean(t.enabled);
  $("topup-threshold").value = (unit === "s" ? t.threshold_minutes : t.threshold) ?? 10;
  if (t.package_key) $("topup-package").value = t.package_key;
  $("topup-pm").value = t.payment_method_id || "";
  $("topup-customer").value = t.customer_id || "";
  if (t.last_error) say($("topup-status"), `Last attempt failed: ${t.last_error}`, "error");
  show($("topup"), true);
}

async function saveTopUp(event) {
  event.preventDefault();
  const body = {
    enabled: $("topup-enabled").checked,
    // the threshold in the deployment's unit (issue 10): minutes of AI time, else `threshold`
    ...(unit === "s" ? { threshold_minutes: Number($("topup-threshold").value) }
      : { threshold: String($("topup-threshold").value) }),
    package_key: $("topup-package").value, currency: $("currency").value,
  };
  if ($("topup-pm").value) body.payment_method_id = $("topup-pm").value.trim();
  if ($("topup-customer").value) body.customer_id = $("topup-customer").value.trim();
  try {
    await api(`/v1/billing/auto-topup/${account}`, { method: "PUT", body });
    say($("topup-status"), "Saved.");
  } catch (error) {
    say($("topup-status"), problemText(error), "error");
  }
}

async function loadAlerts() {
  if (!isOn(feats, "alerts")) return;
  const a = await optional(`/v1/billing/alerts/${account}`);
  if (!a) return;
  // GET /v1/billing/alerts/{id} (gateway/api/alerts.py AlertSettingsView).
  $("alert-threshold").value = a.low_balance_threshold ?? "";
  const state = $("alert-state");
  state.dataset.state = a.state;
  state.textContent = `Now: ${a.state === "ok" ? "above the threshold" : a.state}` +
    (a.default ? " (the plan's default threshold)." : ".");
  show($("alerts"), true);
}

async function saveAlerts(event) {
  event.preventDefault();
  try {
    const saved = await api(`/v1/billing/alerts/${account}`, {
      method: "PUT", body: { low_balance_threshold: Number($("alert-threshold").value) },
    });
    say($("alerts-status"), `Saved: alert below ${fmtAmount(saved.low_balance_threshold, saved.unit)}.`);
  } catch (error) {
    say($("alerts-status"), problemText(error), "error");
  }
}

async function loadPaymentMethods() {
  if (!isOn(feats, "payments")) return;
  // GET /v1/billing/payment-methods/{id}: a JSON array, default first (payment_methods.py).
  const methods = await optional(`/v1/billing/payment-methods/${account}`);
  if (!Array.isArray(methods)) return;
  const list = clear($("pm-list"));
  for (const m of methods) {
    list.append(el("li", { "data-testid": "pm-row", dataset: { pm: m.id } }, `${m.card_brand || m.type} •••• ${m.card_last4 || "????"}`,
      m.exp_month ? ` (expires ${m.exp_month}/${m.exp_year})` : "", m.is_default ? " — default" : ""));
  }
  if (!methods.length) list.append(el("li", {}, "No saved payment method."));
  show($("portal"), true);
  show($("payment-methods"), true);
}

async function openPortal() {
  try {
    const doc = await api(`/v1/billing/portal/${account}`, { method: "POST", body: {} });
    $("pm-status").replaceChildren("Continue to ",
      el("a", { href: doc.portal_url, "data-testid": "portal-link" }, "the billing portal"), ".");
    safeRedirect(doc.portal_url);
  } catch (error) {
    say($("pm-status"), problemText(error), "error");
  }
}

async function loadInvoices() {
  if (!isOn(feats, "invoices") || !isOn(feats, "payments")) return;
  // GET /v1/billing/invoices/{id} (gateway/api/invoices.py InvoiceList): {invoices, next_cursor}.
  const doc = await optional(`/v1/billing/invoices/${account}`);
  if (!doc || !Array.isArray(doc.invoices)) return;
  const invoices = doc.invoices;
  const rows = clear($("inv-rows"));
  for (const inv of invoices) {
    rows.append(el("tr", { "data-testid": "invoice-row", dataset: { invoiceId: inv.id } },
      el("td", {}, inv.invoice_number || inv.id), el("td", {}, inv.status),
      el("td", {}, `${Number(inv.total).toFixed(2)} ${inv.currency}`),
      el("td", {}, fmtTime(inv.created_at || inv.period_start)),
      el("td", {}, el("a", { href: inv.pdf_url, "data-testid": "invoice-pdf", download: "" }, "PDF"))));
  }
  if (!invoices.length) rows.append(el("tr", {}, el("td", { colspan: 5 }, "No invoices yet.")));
  show($("invoices"), true);
}

async function loadSubscription() {
  // GET /v1/billing/subscription/{id} (gateway/api/subscriptions.py): 404 without one.
  if (!isOn(feats, "subscriptions")) return;
  const sub = await optional(`/v1/billing/subscription/${account}`);
  if (!sub) return;
  const facts = clear($("sub-facts"));
  const fact = (name, value, testid) => facts.append(el("div", {}, el("dt", {}, name),
    el("dd", testid ? { "data-testid": testid } : {}, value)));
  fact("Plan", `${sub.plan || sub.tier} (${sub.status})`, "subscription-plan");
  fact("Current period", `${fmtTime(sub.current_period_start)} – ${fmtTime(sub.current_period_end)}`);
  fact("Included this period", fmtAmount(sub.included, sub.unit));
  fact("Used", fmtAmount(sub.used, sub.unit));
  fact("Remaining", fmtAmount(sub.remaining, sub.unit), "subscription-remaining");
  if (sub.cancel_at_period_end) fact("Ends", `at the period end (${fmtTime(sub.current_period_end)})`);
  show($("subscription"), true);
}

// ---- live updates -----------------------------------------------------------------------------

let refreshTimer = null;
function refreshSoon(usage) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    loadBalance().catch(report);
    loadEvents().catch(report);
    if (usage) loadUsage().catch(report);
  }, 100);
}

function connect() {
  if (!isOn(feats, "stream")) return say($("live-status"), "Live updates are off on this gateway.");
  const source = new EventSource(`/v1/billing/stream/${account}`);
  source.addEventListener("open", () => say($("live-status"), "Live: changes appear as they happen.", "ok"));
  source.addEventListener("error", () => say($("live-status"), "Live updates interrupted; reconnecting…", "warn"));
  source.addEventListener("balance.updated", (e) => {
    const data = JSON.parse(e.data);
    // The event's totals are whole seconds: shown as they come in a time deployment; in a
    // currency or tokens one the balance document is fetched again.
    if (timeUnit && data.total_seconds !== undefined) showTotals(data);
    else if (!timeUnit && data.reason === "snapshot") refreshSoon(false);
    if (data.reason !== "snapshot") refreshSoon(data.reason === "consumption");
  });
  for (const type of ["credit.applied", "bucket.created", "bucket.expired", "package.fulfilled", "rollover.created", "history.truncated"]) {
    source.addEventListener(type, () => refreshSoon(false));
  }
}

function report(error) {
  const box = $("unavailable");
  say(box, `Some data could not be loaded: ${problemText(error)}`, "notice");
  show(box, true);
}

async function main() {
  feats = await features();
  $("period").addEventListener("change", () => loadUsage().catch(report));
  $("currency").addEventListener("change", () => loadCatalog().catch(report));
  $("packages").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-package]");
    if (button) buy(button);
  });
  $("events-more").addEventListener("click", () => loadEvents(true).catch(report));
  $("topup-form").addEventListener("submit", saveTopUp);
  $("alerts-form").addEventListener("submit", saveAlerts);
  $("portal").addEventListener("click", openPortal);
  await Promise.all([loadBalance(), loadEvents(), loadCatalog()].map((p) => p.catch(report)));
  connect();
  await Promise.all([loadUsage(), loadTopUp(), loadAlerts(), loadPaymentMethods(), loadInvoices(), loadCosts(),
    loadSubscription()]
    .map((p) => p.catch(report)));
  body.dataset.ready = "1";
}

main();
