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
    constructor(status, message, param) {
      super(message);
      this.status = status;
      this.param = param || null;
    }
  }

  // Where the API is: the directory the page was served from, whatever it is called
  // (`/prod/console` behind an execute-api stage, `/console` at a custom domain's root,
  // either with a trailing slash). Every API path below is relative to it ("admin/...",
  // "v1/..."), never root-absolute, so the stage prefix is kept.
  const apiBase = new URL(location.pathname.endsWith("/") ? "../" : "./", location.href);

  async function api(path, options = {}) {
    const response = await fetch(new URL(path, apiBase), {
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
      throw new ApiError(response.status, message, body && body.error && body.error.param);
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
    const query = (group) => api(`admin/usage/summary?group_by=${group}&from=${encodeURIComponent(from)}&limit=500`);
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
        const account = await api("v1/account", { key });
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
    models: { title: "Models & rules", admin: true, render: modelsView },
    users: { title: "Users", admin: true, render: usersView },
    usage: { title: "Usage", admin: true, render: usageView },
    audit: { title: "Audit log", admin: true, render: auditView },
    account: { title: "Account", admin: false, render: accountView },
    activity: { title: "My usage", admin: false, render: activityView },
    keys: { title: "Keys", admin: false, render: keysView },
  };

  // One provider (#/providers?provider=ID): its settings (edit) and its health history,
  // oldest to newest, as a timeline of checks.
  async function providerDetails(id) {
    const path = `admin/providers/${encodeURIComponent(id)}`;
    const [provider, health] = await Promise.all([api(path), api(`${path}/health?limit=100`)]);
    const edit = fieldForm("edit-provider", [
      { name: "base_url", label: "Base URL", size: 36 },
      { name: "rate_limit_rpm", label: "Requests / minute (empty: none)", inputmode: "numeric", size: 8 },
      { name: "rate_limit_tpm", label: "Tokens / minute (empty: none)", inputmode: "numeric", size: 10 },
    ], "Save", (v) => {
      const number = (text) => (text === "" ? null : /^\d+$/.test(text) ? Number(text) : text);
      return api(path, { method: "PATCH", body: {
        base_url: v.base_url, rate_limit_rpm: number(v.rate_limit_rpm), rate_limit_tpm: number(v.rate_limit_tpm) } });
    });
    edit.querySelector('[name="base_url"]').value = provider.base_url;
    edit.querySelector('[name="rate_limit_rpm"]').value = provider.rate_limit_rpm == null ? "" : provider.rate_limit_rpm;
    edit.querySelector('[name="rate_limit_tpm"]').value = provider.rate_limit_tpm == null ? "" : provider.rate_limit_tpm;
    const checks = health.data.slice().reverse();
    const timeline = checks.length
      ? h("div", { class: "timeline", id: "health-timeline" }, checks.map((c) => {
        const at = new Date(c.checked_at);
        return h("span", { class: `tick ${c.status}`, "data-status": c.status,
          title: `${at.toLocaleString()} (${at.toISOString()} UTC): ${c.status}` +
            `${c.response_time_ms == null ? "" : `, ${c.response_time_ms} ms`}${c.error ? `, ${c.error}` : ""}` });
      }))
      : h("p", { class: "empty" }, "Not checked yet: the health check runs every few minutes (or POST /admin/health-check).");
    return [h("div", { class: "card", id: "provider-details", "data-provider": provider.provider_slug },
      h("h2", {}, `${provider.provider_name}: ${provider.is_active ? "enabled" : `disabled (${provider.disabled_reason || "admin"})`}, ${provider.health_status}`),
      edit,
      h("h2", {}, `Health checks (${health.total})`), timeline,
      h("p", {}, h("a", { href: "#/providers" }, "Close")))];
  }

  async function providersView() {
    const chosen = hashParams().get("provider");
    const details = chosen ? await providerDetails(chosen) : [];
    const page = await api("admin/providers?limit=200");
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
            await api(`admin/providers/${p.id}`, { method: "PATCH", body: { is_active: !p.is_active } });
            render();
          } catch (error) {
            toggle.after(errorBox(error));
            toggle.disabled = false;
          }
        },
      }, p.is_active ? "Disable" : "Enable");
      return h("tr", { "data-slug": p.provider_slug },
        h("td", {}, h("a", { href: `#/providers?provider=${p.id}` }, h("strong", {}, p.provider_name)),
          h("div", { class: "muted" }, p.provider_slug)),
        h("td", {}, p.api_format),
        h("td", {}, h("span", { class: `badge ${p.is_active ? "active" : "disabled"}` },
          p.is_active ? "enabled" : `disabled${p.disabled_reason ? ` (${p.disabled_reason})` : ""}`)),
        h("td", {}, h("span", { class: `badge ${p.health_status}` }, p.health_status)),
        h("td", {}, when(p.health_last_checked)),
        h("td", { class: "num" }, p.health_response_time_ms == null ? "—" : `${p.health_response_time_ms} ms`),
        h("td", {}, toggle));
    });
    return [h("h1", {}, "Providers"), ...details,
      h("table", { id: "providers" },
        h("thead", {}, h("tr", {}, ["Provider", "Format", "State", "Health", "Last probe", "Probe time", ""]
          .map((t) => h("th", {}, t)))),
        h("tbody", {}, rows))];
  }

  // A form whose API errors are shown next to the field the API names (`error.param`).
  function fieldForm(id, fields, submitLabel, onSubmit) {
    const inputs = {};
    const notes = {};
    const general = h("p", { class: "error", role: "alert" });
    general.hidden = true;
    const form = h("form", { class: "card fields", id },
      fields.map((f) => {
        inputs[f.name] = f.options
          ? h("select", { name: f.name }, f.options.map(([value, label]) => h("option", { value }, label)))
          : h("input", { name: f.name, placeholder: f.placeholder || "", size: f.size || 12, inputmode: f.inputmode || null });
        notes[f.name] = h("span", { class: "error field-error", "data-for": f.name });
        return h("label", {}, h("span", { class: "muted" }, f.label), inputs[f.name], notes[f.name]);
      }),
      h("button", { type: "submit", class: "primary" }, submitLabel), general);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      for (const note of Object.values(notes)) note.textContent = "";
      general.hidden = true;
      const values = {};
      for (const [name, input] of Object.entries(inputs)) values[name] = input.value.trim();
      try {
        await onSubmit(values);
        render();
      } catch (error) {
        if (error.param && notes[error.param]) {
          notes[error.param].textContent = error.message;
        } else {
          general.textContent = error.message;
          general.hidden = false;
        }
      }
    });
    return form;
  }

  function activeToggle(path, active) {
    const button = h("button", { class: active ? "danger" : "primary" }, active ? "Turn off" : "Turn on");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(path, { method: "PATCH", body: { is_active: !active } });
        render();
      } catch (error) {
        button.after(errorBox(error));
        button.disabled = false;
      }
    });
    return button;
  }

  async function modelsView() {
    const [models, rules, providers] = await Promise.all([
      api("admin/models?limit=500"), api("admin/routing-rules?limit=500"), api("admin/providers?limit=200")]);
    const create = fieldForm("create-model", [
      { name: "provider_id", label: "Provider", options: providers.data.map((p) => [String(p.id), p.provider_slug]) },
      { name: "model_id", label: "Model id", placeholder: "gpt-4o-mini" },
      { name: "context_window", label: "Context window", placeholder: "128000", inputmode: "numeric", size: 8 },
      { name: "cost_per_1m_input_tokens", label: "Input USD / 1M", placeholder: "0.15", inputmode: "decimal", size: 8 },
      { name: "cost_per_1m_output_tokens", label: "Output USD / 1M", placeholder: "0.60", inputmode: "decimal", size: 8 },
      { name: "power_level", label: "Power level", options: [["balanced", "balanced"], ["eco", "eco"], ["precision", "precision"]] },
    ], "Add the model", (v) => api("admin/models", { method: "POST", body: {
      provider_id: Number(v.provider_id), model_id: v.model_id,
      context_window: /^\d+$/.test(v.context_window) ? Number(v.context_window) : v.context_window,
      // Prices go as the strings typed: the API reads them as exact decimals.
      cost_per_1m_input_tokens: v.cost_per_1m_input_tokens, cost_per_1m_output_tokens: v.cost_per_1m_output_tokens,
      power_level: v.power_level,
    } }));
    const integer = (text) => (/^-?\d+$/.test(text) ? Number(text) : text);
    const createRule = fieldForm("create-rule", [
      { name: "model_id", label: "Model", options: models.data.filter((m) => m.model_type === "chat")
        .map((m) => [String(m.id), `${m.model_id} (${m.provider_slug})`]) },
      { name: "power_level", label: "Power level", options: [["balanced", "balanced"], ["eco", "eco"], ["precision", "precision"]] },
      { name: "priority", label: "Priority (1 first)", placeholder: "1", inputmode: "numeric", size: 6 },
      { name: "weight", label: "Weight (> 0)", placeholder: "100", inputmode: "numeric", size: 6 },
    ], "Add the rule", (v) => api("admin/routing-rules", { method: "POST", body: {
      model_id: Number(v.model_id), power_level: v.power_level,
      priority: v.priority === "" ? undefined : integer(v.priority),
      weight: v.weight === "" ? undefined : integer(v.weight) } }));
    const chosen = hashParams().get("model");
    const editing = chosen ? models.data.find((m) => String(m.id) === chosen) : null;
    let editModel = null;
    if (editing) {
      editModel = fieldForm("edit-model", [
        { name: "cost_per_1m_input_tokens", label: "Input USD / 1M", inputmode: "decimal", size: 8 },
        { name: "cost_per_1m_output_tokens", label: "Output USD / 1M", inputmode: "decimal", size: 8 },
        { name: "context_window", label: "Context window", inputmode: "numeric", size: 8 },
      ], `Save ${editing.model_id}`, (v) => api(`admin/models/${editing.id}`, { method: "PATCH", body: {
        cost_per_1m_input_tokens: v.cost_per_1m_input_tokens, cost_per_1m_output_tokens: v.cost_per_1m_output_tokens,
        context_window: integer(v.context_window) } }));
      editModel.querySelector('[name="cost_per_1m_input_tokens"]').value = editing.cost_per_1m_input_tokens;
      editModel.querySelector('[name="cost_per_1m_output_tokens"]').value = editing.cost_per_1m_output_tokens;
      editModel.querySelector('[name="context_window"]').value = editing.context_window;
    }
    const chosenRule = hashParams().get("rule");
    const rule = chosenRule ? rules.data.find((r) => String(r.id) === chosenRule) : null;
    let editRule = null;
    if (rule) {
      editRule = fieldForm("edit-rule", [
        { name: "power_level", label: "Power level", options: [["balanced", "balanced"], ["eco", "eco"], ["precision", "precision"]] },
        { name: "priority", label: "Priority", inputmode: "numeric", size: 6 },
        { name: "weight", label: "Weight", inputmode: "numeric", size: 6 },
      ], "Save the rule", (v) => api(`admin/routing-rules/${rule.id}`, { method: "PATCH", body: {
        power_level: v.power_level, priority: integer(v.priority), weight: integer(v.weight) } }));
      editRule.querySelector('[name="power_level"]').value = rule.power_level;
      editRule.querySelector('[name="priority"]').value = rule.priority;
      editRule.querySelector('[name="weight"]').value = rule.weight;
    }
    const modelRows = models.data.map((m) => h("tr", { "data-model": m.id },
      h("td", {}, h("a", { href: `#/models?model=${m.id}` }, h("strong", {}, m.model_id)), h("div", { class: "muted" }, m.provider_slug)),
      h("td", {}, m.model_type),
      h("td", { class: "num" }, `${m.cost_per_1m_input_tokens} / ${m.cost_per_1m_output_tokens}`),
      h("td", {}, m.power_level),
      h("td", {}, h("span", { class: `badge ${m.is_active ? "active" : "disabled"}` }, m.is_active ? "on" : "off")),
      h("td", {}, activeToggle(`admin/models/${m.id}`, m.is_active))));
    const ruleRows = rules.data.map((r) => h("tr", { "data-rule": r.id },
      h("td", {}, h("a", { href: `#/models?rule=${r.id}` }, `${r.model_name} (${r.provider_slug})`)),
      h("td", {}, r.power_level),
      h("td", {}, r.user_tier || "any"),
      h("td", {}, r.task_type || "any"),
      h("td", { class: "num" }, r.priority),
      h("td", { class: "num" }, r.weight),
      h("td", {}, r.is_fallback ? `fallback ${r.fallback_order}` : "primary"),
      h("td", {}, h("span", { class: `badge ${r.is_active ? "active" : "disabled"}` }, r.is_active ? "on" : "off")),
      h("td", {}, activeToggle(`admin/routing-rules/${r.id}`, r.is_active))));
    return [h("h1", {}, "Models & rules"),
      editModel ? h("h2", {}, `Edit ${editing.model_id} (${editing.provider_slug})`) : null, editModel,
      editRule ? h("h2", {}, `Edit the rule for ${rule.model_name} (${rule.provider_slug})`) : null, editRule,
      h("h2", {}, "Add a model"), create,
      h("h2", {}, "Models"),
      modelRows.length ? h("table", { id: "models" },
        h("thead", {}, h("tr", {}, ["Model", "Type", "USD / 1M in / out", "Power level", "State", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, modelRows)) : h("p", { class: "empty" }, "No model yet: add one above."),
      h("h2", {}, "Routing rules"), createRule,
      ruleRows.length ? h("table", { id: "rules" },
        h("thead", {}, h("tr", {}, ["Model", "Power level", "Tier", "Task", "Priority", "Weight", "Role", "State", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, ruleRows)) : h("p", { class: "empty" }, "No routing rule: `auto` has nothing to choose from (POST /admin/routing-rules).")];
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
        await api(`admin/users/${encodeURIComponent(user.id)}/credits`, {
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

  // One user's cap and gateway keys (#/users?user=ID).
  async function userDetails(id) {
    const path = `admin/users/${encodeURIComponent(id)}`;
    const [user, keys] = await Promise.all([api(path), api(`${path}/api-keys`)]);
    const cap = fieldForm("user-cap", [
      { name: "monthly_cap_usd", label: "Monthly cap, USD (empty: none)", placeholder: "none", inputmode: "decimal", size: 10 },
    ], "Set the cap", (v) => api(path, { method: "PATCH", body: { monthly_cap_usd: v.monthly_cap_usd === "" ? null : v.monthly_cap_usd } }));
    cap.querySelector("input").value = user.monthly_cap_usd == null ? "" : user.monthly_cap_usd;
    const shown = h("div", { id: "issued-key" });
    const issue = fieldForm("issue-key", [
      { name: "name", label: "New key's name", placeholder: "server" },
      { name: "role", label: "Role", options: [["user", "user"], ["admin", "admin"]] },
    ], "Issue a key", async (v) => {
      const made = await api(`${path}/api-keys`, { method: "POST", body: { name: v.name || "console", role: v.role, rpm_limit: null } });
      // Shown once, after the re-render.
      pendingIssued = made.key;
    });
    const issued = pendingIssued;
    pendingIssued = null;
    if (issued) {
      shown.append(h("div", { class: "card" }, h("strong", {}, "The new key (copy it now: it is shown only this once)"),
        h("pre", { id: "issued-key-value" }, issued)));
    }
    const rows = (keys.data || keys).map((k) => h("tr", { "data-key-id": k.id },
      h("td", {}, h("strong", {}, k.name || "—"), h("div", { class: "muted" }, `${k.key_prefix}…, ${k.role}`)),
      h("td", {}, when(k.created_at)),
      h("td", {}, when(k.last_used_at)),
      h("td", {}, k.revoked_at ? h("span", { class: "badge disabled" }, "revoked") : h("button", { class: "danger", onclick: async () => {
        await api(`admin/api-keys/${k.id}`, { method: "DELETE" });
        render();
      } }, "Revoke"))));
    return [h("div", { class: "card", id: "user-details", "data-user": id },
      h("h2", {}, `${id}: ${usd(user.credits_balance)}, ${usd(user.month_spend)} spent this month of ${user.monthly_cap_usd == null ? "no cap" : usd(user.monthly_cap_usd)}`),
      cap, issue, shown,
      rows.length ? h("table", { id: "user-keys" },
        h("thead", {}, h("tr", {}, ["Key", "Created", "Last used", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows)) : h("p", { class: "empty" }, "No gateway key: issue one above."),
      h("p", {}, h("a", { href: "#/users" }, "Close")))];
  }

  // A key just issued, to show once on the next render.
  let pendingIssued = null;

  async function usersView() {
    const page = await api("admin/users?limit=500");
    const users = page.data || page;
    if (!users.length) {
      return [h("h1", {}, "Users"),
        h("p", { class: "empty" }, "No user yet: create one with POST /admin/users (docs/admin.md).")];
    }
    const chosen = hashParams().get("user");
    const details = chosen ? await userDetails(chosen) : [];
    const search = h("input", { type: "search", id: "user-search", placeholder: "Search by user id", "aria-label": "Search users" });
    const rows = users.map((u) => h("tr", { "data-user": u.id },
      h("td", {}, h("a", { href: `#/users?user=${encodeURIComponent(u.id)}` }, h("strong", {}, u.id)),
        h("div", { class: "muted" }, `${u.tier}, ${u.status}`)),
      h("td", { class: "num balance" }, usd(u.credits_balance)),
      h("td", { class: "num" }, usd(u.credits_held)),
      h("td", { class: "num" }, `${usd(u.month_spend)}${u.monthly_cap_usd == null ? "" : ` of ${usd(u.monthly_cap_usd)}`}`),
      h("td", {}, topUpForm(u))));
    search.addEventListener("input", () => {
      const needle = search.value.trim().toLowerCase();
      for (const row of rows) row.hidden = needle !== "" && !row.dataset.user.toLowerCase().includes(needle);
    });
    return [h("h1", {}, "Users"), ...details, h("p", {}, search),
      h("table", { id: "users" },
        h("thead", {}, h("tr", {}, ["User", "Balance", "Held", "Spent this month (cap)", "Top up"]
          .map((t) => h("th", {}, t)))),
        h("tbody", {}, rows))];
  }

  // The usage explorer's filters live in the hash (#/usage?user=…&page=2), so a view can
  // be linked and reloaded.
  function hashParams() {
    const query = location.hash.split("?")[1] || "";
    return new URLSearchParams(query);
  }

  const USAGE_COLUMNS = ["created_at", "request_id", "attempt", "user_id", "provider_slug", "model_name",
    "status_code", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_total_usd", "charged_usd",
    "latency_ms", "was_fallback", "used_byok", "route", "error_message"];

  // A cell a spreadsheet would run as a formula (it starts with = + - @, a tab or a carriage
  // return: OWASP's list for CSV injection) is written as text: `'` first, quoted.
  function csvCell(value) {
    const text = value === null || value === undefined ? "" : String(value);
    if (/^[=+\-@\t\r]/.test(text)) return `"'${text.replace(/"/g, '""')}"`;
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  async function usageView() {
    const params = hashParams();
    const pageSize = 50;
    const page = Math.max(1, Number(params.get("page") || "1") | 0);
    const filters = {};
    for (const name of ["user", "provider", "model", "status", "from", "to"]) {
      if (params.get(name)) filters[name] = params.get(name);
    }
    const query = (extra) => new URLSearchParams(Object.assign({}, filters, extra)).toString();
    // Dates are picked in the browser's time zone and sent as instants.
    const apiFilters = Object.assign({}, filters);
    if (filters.from) apiFilters.from = new Date(`${filters.from}T00:00:00`).toISOString();
    if (filters.to) apiFilters.to = new Date(new Date(`${filters.to}T00:00:00`).getTime() + 86400000).toISOString();
    const apiQuery = (extra) => new URLSearchParams(Object.assign({}, apiFilters, extra)).toString();
    const result = await api(`admin/usage?${apiQuery({ limit: pageSize, offset: (page - 1) * pageSize })}`);

    const input = (name, label, type) => h("label", {}, `${label} `,
      h("input", { name, type: type || "text", value: filters[name] || "", size: 12 }));
    const status = h("select", { name: "status", "aria-label": "Status" },
      h("option", { value: "" }, "any status"),
      h("option", { value: "ok", selected: filters.status === "ok" }, "answered"),
      h("option", { value: "error", selected: filters.status === "error" }, "failed"));
    const form = h("form", { class: "card filters", id: "usage-filters" },
      input("user", "User"), input("provider", "Provider"), input("model", "Model"), status,
      input("from", "From", "date"), input("to", "To", "date"),
      h("button", { type: "submit", class: "primary" }, "Filter"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = {};
      for (const element of form.elements) {
        if (element.name && element.value) chosen[element.name] = element.value;
      }
      location.hash = `#/usage?${new URLSearchParams(chosen)}`;
    });

    const download = h("button", { type: "button", id: "usage-csv" }, "Download CSV");
    download.addEventListener("click", async () => {
      download.disabled = true;
      try {
        const rows = [];
        for (let offset = 0; offset < 10000; offset += 500) {
          const chunk = await api(`admin/usage?${apiQuery({ limit: 500, offset })}`);
          rows.push(...chunk.data);
          if (!chunk.has_more) break;
        }
        const lines = [USAGE_COLUMNS.join(",")].concat(rows.map((r) => USAGE_COLUMNS.map((c) => csvCell(r[c])).join(",")));
        const url = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
        const link = h("a", { href: url, download: "switchboard-usage.csv" });
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (error) {
        download.after(errorBox(error));
      } finally {
        download.disabled = false;
      }
    });

    const rows = result.data.map((r) => h("tr", { "data-id": r.id },
      h("td", {}, when(r.created_at)),
      h("td", {}, r.user_id),
      h("td", {}, `${r.provider_slug || "—"} / ${r.model_name || "—"}`),
      h("td", {}, r.status_code == null ? "—" : r.status_code),
      h("td", { class: "num" }, `${r.prompt_tokens} / ${r.completion_tokens}`),
      h("td", { class: "num" }, usd(r.charged_usd)),
      h("td", { class: "num" }, r.latency_ms == null ? "—" : `${r.latency_ms} ms`),
      h("td", { class: "muted" }, r.request_id)));
    const pages = Math.max(1, Math.ceil(result.total / pageSize));
    const pager = h("p", { class: "pager" },
      page > 1 ? h("a", { href: `#/usage?${query({ page: page - 1 })}`, id: "usage-prev" }, "← newer") : null,
      ` page ${page} of ${pages} (${result.total} rows) `,
      result.has_more ? h("a", { href: `#/usage?${query({ page: page + 1 })}`, id: "usage-next" }, "older →") : null);
    return [h("h1", {}, "Usage"), form,
      result.data.length
        ? h("table", { id: "usage" },
          h("thead", {}, h("tr", {}, ["Time", "User", "Provider / model", "Status", "Tokens in / out", "Charged", "Latency", "Request"]
            .map((t) => h("th", {}, t)))),
          h("tbody", {}, rows))
        : h("p", { class: "empty" }, "No usage matches these filters."),
      pager, h("p", {}, download)];
  }

  async function auditView() {
    const params = hashParams();
    const page = Math.max(1, Number(params.get("page") || "1") | 0);
    const result = await api(`admin/audit-log?limit=50&offset=${(page - 1) * 50}`);
    if (!result.data.length) {
      return [h("h1", {}, "Audit log"), h("p", { class: "empty" }, "Nothing changed yet: every admin write lands here.")];
    }
    const rows = result.data.map((e) => h("tr", { "data-id": e.id },
      h("td", {}, when(e.created_at)),
      h("td", {}, e.actor),
      h("td", {}, e.action),
      h("td", {}, `${e.entity_type}${e.entity_id ? ` ${e.entity_id}` : ""}`),
      h("td", { class: "muted" }, e.request_id || "")));
    return [h("h1", {}, "Audit log"),
      h("table", { id: "audit" },
        h("thead", {}, h("tr", {}, ["Time", "Actor", "Action", "Entity", "Request"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows)),
      h("p", { class: "pager" },
        page > 1 ? h("a", { href: `#/audit?page=${page - 1}` }, "← newer") : null,
        ` page ${page} `,
        result.has_more ? h("a", { href: `#/audit?page=${page + 1}` }, "older →") : null)];
  }

  async function accountView() {
    const a = await api("v1/account");
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

  // The signed-in user's own usage: 14 days by day and by model, and the latest requests
  // (GET /v1/usage/summary, GET /v1/usage).
  async function activityView() {
    const from = new Date(Date.now() - 13 * 86400000).toISOString().slice(0, 10) + "T00:00:00Z";
    const [byDay, byModel, recent] = await Promise.all([
      api(`v1/usage/summary?group_by=day&from=${encodeURIComponent(from)}&limit=500`),
      api(`v1/usage/summary?group_by=model&from=${encodeURIComponent(from)}&limit=500`),
      api("v1/usage?limit=20")]);
    const days = byDay.data;
    const out = [h("h1", {}, "My usage"),
      h("div", { class: "cards" },
        h("div", { class: "card stat" }, h("div", { class: "label" }, "Requests, 14 days"),
          h("div", { class: "value", id: "my-requests" }, days.reduce((n, r) => n + r.requests, 0))),
        h("div", { class: "card stat" }, h("div", { class: "label" }, "Spent, 14 days"),
          h("div", { class: "value", id: "my-spend" }, usd(sumMoney(days.map((r) => r.charged_usd))))))];
    if (!recent.data.length) {
      out.push(h("p", { class: "empty" }, "No request yet: send one to /v1/chat/completions with your key."));
      return out;
    }
    const keys = [];
    for (let i = 13; i >= 0; i--) keys.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
    const byKey = new Map(days.map((r) => [r.key, r]));
    out.push(chart("Requests per day", keys, [
      { label: "requests", values: keys.map((k) => (byKey.has(k) ? byKey.get(k).requests : 0)) }], "chart-my-requests"),
    h("h2", {}, "By model"), summaryTable("my-by-model", "Model", byModel.data),
    h("h2", {}, "Latest requests"),
    h("table", { id: "my-recent" },
      h("thead", {}, h("tr", {}, ["Time", "Model", "Status", "Tokens in / out", "Charged"].map((t) => h("th", {}, t)))),
      h("tbody", {}, recent.data.map((r) => h("tr", { "data-id": r.id },
        h("td", {}, when(r.created_at)),
        h("td", {}, `${r.model_name || "—"} (${r.provider_slug || "—"})`),
        h("td", {}, r.status_code == null ? "—" : r.status_code),
        h("td", { class: "num" }, `${r.prompt_tokens} / ${r.completion_tokens}`),
        h("td", { class: "num" }, usd(r.charged_usd)))))));
    return out;
  }

  // A user's own gateway keys (create: shown once; revoke) and provider keys (BYOK: add,
  // check, turn off and on, delete; only ever shown masked).
  async function keysView() {
    const [own, byok] = await Promise.all([api("v1/api-keys"), api("v1/byok")]);
    const out = [h("h1", {}, "Keys")];

    const name = h("input", { name: "name", placeholder: "a name, such as laptop", "aria-label": "Key name", maxlength: 200 });
    const created = h("div", { id: "created-key" });
    const createForm = h("form", { class: "inline", id: "create-key" }, name,
      h("button", { type: "submit", class: "primary" }, "Create a key"));
    createForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const key = await api("v1/api-keys", { method: "POST", body: { name: name.value.trim() || "console" } });
        // Shown this once: it is never stored anywhere the page can read it again.
        created.replaceChildren(h("div", { class: "card" },
          h("strong", {}, "Your new key (copy it now: it is shown only this once)"),
          h("pre", { id: "new-key" }, key.key),
          h("button", { type: "button", onclick: () => render() }, "Done")));
      } catch (error) {
        created.replaceChildren(errorBox(error));
      }
    });
    const keyRows = own.data.map((k) => h("tr", { "data-key-id": k.id },
      h("td", {}, h("strong", {}, k.name || "—"), h("div", { class: "muted" }, `${k.prefix}…`)),
      h("td", {}, when(k.created_at)),
      h("td", {}, when(k.last_used_at)),
      h("td", {}, k.revoked_at ? h("span", { class: "badge disabled" }, "revoked") : h("span", { class: "badge active" }, "active")),
      h("td", {}, k.revoked_at || k.prefix === session.key.slice(0, k.prefix.length)
        ? (k.revoked_at ? "" : h("span", { class: "muted" }, "this session's key"))
        : h("button", { class: "danger", onclick: async () => {
          await api(`v1/api-keys/${k.id}`, { method: "DELETE" });
          render();
        } }, "Revoke"))));
    out.push(h("h2", {}, "Gateway keys"), createForm, created,
      keyRows.length
        ? h("table", { id: "own-keys" },
          h("thead", {}, h("tr", {}, ["Key", "Created", "Last used", "State", ""].map((t) => h("th", {}, t)))),
          h("tbody", {}, keyRows))
        : h("p", { class: "empty" }, "No gateway key yet: create one above."));

    const provider = h("input", { name: "provider", placeholder: "openai", size: 10, "aria-label": "Provider" });
    const secret = h("input", { name: "api_key", type: "password", placeholder: "the provider's key", autocomplete: "off", "aria-label": "Provider key" });
    const byokMessage = h("span", { role: "status" });
    const byokForm = h("form", { class: "inline", id: "add-byok" }, provider, secret,
      h("button", { type: "submit", class: "primary" }, "Add or replace"), byokMessage);
    byokForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api(`v1/byok/${encodeURIComponent(provider.value.trim())}`, { method: "PUT", body: { api_key: secret.value, validate: false } });
        secret.value = "";
        render();
      } catch (error) {
        byokMessage.className = "error";
        byokMessage.textContent = error.message;
      }
    });
    const action = (label, method, path, body, cls) => h("button", { class: cls || "", onclick: async (event) => {
      event.target.disabled = true;
      try {
        await api(path, { method, body });
        render();
      } catch (error) {
        event.target.after(errorBox(error));
        event.target.disabled = false;
      }
    } }, label);
    const byokRows = byok.data.map((k) => {
      const path = `v1/byok/${encodeURIComponent(k.provider_slug)}`;
      return h("tr", { "data-provider": k.provider_slug },
        h("td", {}, h("strong", {}, k.provider_slug), h("div", { class: "muted key-hint" }, k.key_hint)),
        h("td", {}, h("span", { class: `badge ${k.is_active ? "active" : "disabled"}` }, k.is_active ? "on" : "off")),
        h("td", {}, k.is_validated ? h("span", { class: "badge healthy" }, "valid")
          : h("span", { class: "badge" }, k.validation_error ? `refused: ${k.validation_error}` : "not checked"),
          " ", when(k.last_validated_at)),
        h("td", { class: "num" }, k.total_requests),
        h("td", {},
          action("Check", "POST", `${path}/validate`),
          " ", action(k.is_active ? "Turn off" : "Turn on", "PATCH", path, { is_active: !k.is_active }),
          " ", action("Delete", "DELETE", path, undefined, "danger")));
    });
    out.push(h("h2", {}, "Your provider keys (BYOK)"),
      h("p", { class: "muted" }, "Requests to these providers use your own key; it is stored encrypted and never shown again."),
      byokForm,
      byokRows.length
        ? h("table", { id: "byok" },
          h("thead", {}, h("tr", {}, ["Provider", "State", "Check", "Requests", ""].map((t) => h("th", {}, t)))),
          h("tbody", {}, byokRows))
        : h("p", { class: "empty" }, "No provider key: add one above to use your own account with a provider."));
    return out;
  }

  // ------------------------------------------------------------------ routing

  function navigation() {
    const current = location.hash.replace(/^#\//, "").split("?")[0] || "";
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
        const account = await api("v1/account", { key });
        session = { key, role: account.key_role, account };
      } catch (_) {
        sessionStorage.removeItem(KEY);
        return signInView("Your session ended: sign in again.");
      }
    }
    const name = location.hash.replace(/^#\//, "").split("?")[0] || (session.role === "admin" ? "overview" : "account");
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
