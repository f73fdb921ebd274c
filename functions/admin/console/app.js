// The Switchboard console: one page, plain JavaScript, no build step (docs/console.md).
// Every number comes from the JSON API as it answered it: money stays the API's decimal
// string (never a float). The key lives in this tab's sessionStorage only.
"use strict";

(() => {
  const KEY = "switchboard.key";
  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  let session = null; // {key, role, account}

  // ------------------------------------------------------------------ DOM and API helpers

  // Builds an element; strings become text nodes (never HTML).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function show(...nodes) {
    main.replaceChildren(...nodes);
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      method: options.method || "GET",
      headers: Object.assign(
        { authorization: `Bearer ${session ? session.key : options.key}` },
        options.body ? { "content-type": "application/json" } : {},
      ),
      body: options.body ? JSON.stringify(options.body) : undefined,
      cache: "no-store",
    });
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = (body && body.error && body.error.message) || `HTTP ${response.status}`;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  // A money amount as the API wrote it, with its unit.
  function usd(value) {
    return value === null || value === undefined ? "—" : `${value} USD`;
  }

  // Exact sum of decimal strings (the API's money), as a decimal string: BigInt in
  // billionths, the ledger's scale. Never through floating point.
  function sumMoney(values) {
    const scale = 9;
    let total = 0n;
    for (const value of values) {
      const text = String(value);
      const negative = text.startsWith("-");
      const [whole, fraction = ""] = text.replace(/^-/, "").split(".");
      const units = BigInt(whole || "0") * 10n ** BigInt(scale) + BigInt((fraction + "0".repeat(scale)).slice(0, scale) || "0");
      total += negative ? -units : units;
    }
    const negative = total < 0n;
    const digits = (negative ? -total : total).toString().padStart(scale + 1, "0");
    const whole = digits.slice(0, -scale);
    const fraction = digits.slice(-scale).replace(/0+$/, "");
    return `${negative ? "-" : ""}${whole}${fraction ? `.${fraction}` : ""}`;
  }

  // A line chart (uPlot) of `series` ({label, values}) over `days` (UTC dates).
  function chart(title, days, series, id) {
    const box = h("div", { class: "card chart", id });
    box.append(h("div", { class: "label" }, title));
    const x = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
    const colors = ["#2d5bd3", "#b42318", "#067647", "#b54708"];
    requestAnimationFrame(() => {
      new uPlot({
        width: Math.max(box.clientWidth - 32, 300), height: 220,
        series: [{}].concat(series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length], width: 2 }))),
        axes: [{}, { size: 84, values: (_, ticks) => ticks.map((v) => (v === 0 ? "0" : String(Number(v.toPrecision(3))))) }],
        scales: { x: { time: true } },
      }, [x, ...series.map((s) => s.values)], box);
    });
    return box;
  }

  function summaryTable(id, heading, rows) {
    if (!rows.length) return h("p", { class: "empty" }, `No usage yet by ${heading.toLowerCase()}.`);
    return h("table", { id },
      h("thead", {}, h("tr", {}, [heading, "Requests", "Errors", "Spend", "p50", "p99"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map((r) => h("tr", { "data-key": r.key },
        h("td", {}, r.key),
        h("td", { class: "num" }, r.requests),
        h("td", { class: "num" }, r.errors),
        h("td", { class: "num" }, usd(r.charged_usd)),
        h("td", { class: "num" }, r.p50_latency_ms == null ? "—" : `${r.p50_latency_ms} ms`),
        h("td", { class: "num" }, r.p99_latency_ms == null ? "—" : `${r.p99_latency_ms} ms`)))));
  }

  async function overviewView() {
    const from = new Date(Date.now() - 13 * 86400000).toISOString().slice(0, 10) + "T00:00:00Z";
    const query = (group) => api(`/admin/usage/summary?group_by=${group}&from=${encodeURIComponent(from)}&limit=500`);
    const [byDay, byModel, byProvider] = await Promise.all([query("day"), query("model"), query("provider")]);
    const days = byDay.data;
    const total = (field) => days.reduce((n, r) => n + r[field], 0);
    const stat = (label, value, id) =>
      h("div", { class: "card stat" }, h("div", { class: "label" }, label), h("div", { class: "value", id }, value));
    const out = [h("h1", {}, "Overview"),
      h("p", { class: "muted" }, "The last 14 days (UTC), from GET /admin/usage/summary."),
      h("div", { class: "cards" },
        stat("Requests", total("requests"), "total-requests"),
        stat("Failed attempts", total("errors"), "total-errors"),
        stat("Spend", usd(sumMoney(days.map((r) => r.charged_usd))), "total-spend"))];
    if (!days.length) {
      out.push(h("p", { class: "empty" }, "No usage in the last 14 days: send a request to /v1/chat/completions."));
      return out;
    }
    // Every day of the range, a day without usage as 0 (no latency: a gap).
    const keys = [];
    for (let i = 13; i >= 0; i--) keys.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
    const byKey = new Map(days.map((r) => [r.key, r]));
    const column = (field, empty) => keys.map((k) => (byKey.has(k) ? byKey.get(k)[field] : empty));
    out.push(
      chart("Requests and failed attempts per day", keys, [
        { label: "requests", values: column("requests", 0) },
        { label: "failed attempts", values: column("errors", 0) }], "chart-requests"),
      // The chart's scale only; the figures shown as text are the exact strings.
      chart("Spend per day (USD)", keys, [{ label: "spend", values: column("charged_usd", "0").map(Number) }], "chart-spend"),
      chart("Latency per day (ms)", keys, [
        { label: "p50", values: column("p50_latency_ms", null) },
        { label: "p99", values: column("p99_latency_ms", null) }], "chart-latency"),
      h("h2", {}, "By model"), summaryTable("by-model", "Model", byModel.data),
      h("h2", {}, "By provider"), summaryTable("by-provider", "Provider", byProvider.data));
    return out;
  }

  // A timestamp in the browser's time zone, UTC on hover.
  function when(iso) {
    if (!iso) return h("span", { class: "muted" }, "never");
    const date = new Date(iso);
    return h("time", { datetime: iso, title: `${date.toISOString()} (UTC)` }, date.toLocaleString());
  }

  function errorBox(error) {
    return h("p", { class: "error", role: "alert" }, error.message || String(error));
  }

  // ------------------------------------------------------------------ sign-in

  function signInView(message) {
    const input = h("input", {
      type: "password", id: "key", name: "key", autocomplete: "off",
      placeholder: "sk-sb-…", "aria-label": "API key",
    });
    const form = h("form", { class: "card signin", id: "signin" },
      h("h1", {}, "Sign in"),
      h("p", { class: "muted" },
        "Paste an admin key for the admin views, or your own gateway key for your account. " +
        "The key stays in this tab only."),
      input,
      message ? h("p", { class: "error", role: "alert" }, message) : null,
      h("button", { class: "primary", type: "submit" }, "Sign in"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      try {
        const account = await api("/v1/account", { key });
        sessionStorage.setItem(KEY, key);
        session = { key, role: account.key_role, account };
        location.hash = session.role === "admin" ? "#/overview" : "#/account";
        render();
      } catch (error) {
        signInView(error.status === 401 ? "That key was not accepted." : error.message);
      }
    });
    nav.replaceChildren();
    who.replaceChildren();
    show(form);
    input.focus();
  }

  function signOut() {
    sessionStorage.removeItem(KEY);
    session = null;
    location.hash = "";
    signInView();
  }

  // ------------------------------------------------------------------ views

  const VIEWS = {
    overview: { title: "Overview", admin: true, render: overviewView },
    providers: { title: "Providers", admin: true, render: providersView },
    users: { title: "Users", admin: true, render: usersView },
    account: { title: "Account", admin: false, render: accountView },
  };

  async function providersView() {
    const page = await api("/admin/providers?limit=200");
    const providers = page.data || page;
    if (!providers.length) {
      return [h("h1", {}, "Providers"),
        h("p", { class: "empty" }, "No provider yet: add one with POST /admin/providers (docs/admin.md).")];
    }
    const rows = providers.map((p) => {
      const toggle = h("button", {
        class: p.is_active ? "danger" : "primary",
        "data-provider": p.provider_slug,
        onclick: async () => {
          toggle.disabled = true;
          try {
            await api(`/admin/providers/${p.id}`, { method: "PATCH", body: { is_active: !p.is_active } });
            render();
          } catch (error) {
            toggle.after(errorBox(error));
            toggle.disabled = false;
          }
        },
      }, p.is_active ? "Disable" : "Enable");
      return h("tr", { "data-slug": p.provider_slug },
        h("td", {}, h("strong", {}, p.provider_name), h("div", { class: "muted" }, p.provider_slug)),
        h("td", {}, p.api_format),
        h("td", {}, h("span", { class: `badge ${p.is_active ? "active" : "disabled"}` },
          p.is_active ? "enabled" : `disabled${p.disabled_reason ? ` (${p.disabled_reason})` : ""}`)),
        h("td", {}, h("span", { class: `badge ${p.health_status}` }, p.health_status)),
        h("td", {}, when(p.health_last_checked)),
        h("td", { class: "num" }, p.health_response_time_ms == null ? "—" : `${p.health_response_time_ms} ms`),
        h("td", {}, toggle));
    });
    return [h("h1", {}, "Providers"),
      h("table", { id: "providers" },
        h("thead", {}, h("tr", {}, ["Provider", "Format", "State", "Health", "Last probe", "Probe time", ""]
          .map((t) => h("th", {}, t)))),
        h("tbody", {}, rows))];
  }

  // A top-up form. Its idempotency key is made with the form, so submitting the same form
  // twice (a double click, a retry after a lost answer) credits once.
  function topUpForm(user) {
    const idempotencyKey = `console-${crypto.randomUUID()}`;
    const amount = h("input", { name: "amount", inputmode: "decimal", placeholder: "10.00", size: 8, "aria-label": "Amount in USD" });
    const reason = h("input", { name: "reason", placeholder: "reason", size: 14, "aria-label": "Reason" });
    const message = h("span", { class: "muted", role: "status" });
    const form = h("form", { class: "inline topup", "data-user": user.id }, amount, reason,
      h("button", { type: "submit", class: "primary" }, "Top up"), message);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = amount.value.trim();
      if (!/^\d{1,9}(\.\d{1,9})?$/.test(value) || /^0*(\.0*)?$/.test(value)) {
        message.className = "error";
        message.textContent = "Enter an amount in USD, such as 10 or 2.50.";
        return;
      }
      try {
        await api(`/admin/users/${encodeURIComponent(user.id)}/credits`, {
          method: "POST",
          body: { amount_usd: value, reason: reason.value.trim() || "console top-up", idempotency_key: idempotencyKey },
        });
        render();
      } catch (error) {
        message.className = "error";
        message.textContent = error.message;
      }
    });
    return form;
  }

  async function usersView() {
    const page = await api("/admin/users?limit=500");
    const users = page.data || page;
    if (!users.length) {
      return [h("h1", {}, "Users"),
        h("p", { class: "empty" }, "No user yet: create one with POST /admin/users (docs/admin.md).")];
    }
    const search = h("input", { type: "search", id: "user-search", placeholder: "Search by user id", "aria-label": "Search users" });
    const rows = users.map((u) => h("tr", { "data-user": u.id },
      h("td", {}, h("strong", {}, u.id), h("div", { class: "muted" }, `${u.tier}, ${u.status}`)),
      h("td", { class: "num balance" }, usd(u.credits_balance)),
      h("td", { class: "num" }, usd(u.credits_held)),
      h("td", { class: "num" }, `${usd(u.month_spend)}${u.monthly_cap_usd == null ? "" : ` of ${usd(u.monthly_cap_usd)}`}`),
      h("td", {}, topUpForm(u))));
    search.addEventListener("input", () => {
      const needle = search.value.trim().toLowerCase();
      for (const row of rows) row.hidden = needle !== "" && !row.dataset.user.toLowerCase().includes(needle);
    });
    return [h("h1", {}, "Users"), h("p", {}, search),
      h("table", { id: "users" },
        h("thead", {}, h("tr", {}, ["User", "Balance", "Held", "Spent this month (cap)", "Top up"]
          .map((t) => h("th", {}, t)))),
        h("tbody", {}, rows))];
  }

  async function accountView() {
    const a = await api("/v1/account");
    const stat = (label, value, id) =>
      h("div", { class: "card stat" }, h("div", { class: "label" }, label), h("div", { class: "value", id }, value));
    return [h("h1", {}, "Account"),
      h("div", { class: "cards" },
        stat("Balance", usd(a.credits_balance), "balance"),
        stat("Held for requests in flight", usd(a.credits_held), "held"),
        stat("Spent this month", usd(a.month_spend), "month-spend"),
        stat("Monthly cap", a.monthly_cap == null ? "none" : usd(a.monthly_cap), "cap")),
      h("p", { class: "muted" }, `User ${a.user_id}, tier ${a.tier}, ${a.status}.`)];
  }

  // ------------------------------------------------------------------ routing

  function navigation() {
    const current = location.hash.replace(/^#\//, "") || "";
    nav.replaceChildren(...Object.entries(VIEWS)
      .filter(([, v]) => !v.admin || session.role === "admin")
      .map(([name, v]) => h("a", { href: `#/${name}`, class: name === current ? "active" : null }, v.title)));
    who.replaceChildren(
      `${session.account.user_id} (${session.role})`,
      h("button", { type: "button", id: "signout", onclick: signOut }, "Sign out"));
  }

  async function render() {
    if (!session) {
      const key = sessionStorage.getItem(KEY);
      if (!key) return signInView();
      try {
        const account = await api("/v1/account", { key });
        session = { key, role: account.key_role, account };
      } catch (_) {
        sessionStorage.removeItem(KEY);
        return signInView("Your session ended: sign in again.");
      }
    }
    const name = location.hash.replace(/^#\//, "") || (session.role === "admin" ? "overview" : "account");
    const view = VIEWS[name];
    navigation();
    if (!view) {
      return show(h("p", { class: "empty" }, "No such view."));
    }
    if (view.admin && session.role !== "admin") {
      return show(h("h1", {}, view.title),
        h("p", { class: "error", role: "alert", id: "needs-admin" },
          "This view needs an admin key. You are signed in with a user key."));
    }
    show(h("p", { class: "muted" }, "Loading…"));
    try {
      show(...await view.render());
    } catch (error) {
      if (error.status === 401) return signOut();
      show(h("h1", {}, view.title), errorBox(error));
    }
  }

  window.addEventListener("hashchange", () => render());
  render();
})();
