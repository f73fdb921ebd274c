"""Drives the console in Debian's chromium (Playwright) against a running `serve`:
signs in as an admin and as a user, checks what each page shows against the JSON API,
performs a write (disable a provider) and checks its effect through the API, reads the
usage CSV back (every cell the API's, formula cells written as text), checks that a user key
cannot open an admin view, and fails on any browser console error, page error, failed
request or error response. Screenshots go to SHOTS_DIR.

Usage: console_check.py BASE_URL ADMIN_KEY USER_KEY SHOTS_DIR
Run by functions/switchboard/tests/console.rs."""

import csv
import json
import os
from decimal import Decimal
import sys
import urllib.request

from playwright.sync_api import sync_playwright

base, admin_key, user_key, shots = sys.argv[1:5]
os.makedirs(shots, exist_ok=True)
problems = []


def api(path, key, method="GET"):
    request = urllib.request.Request(base + path, method=method, headers={"authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def watch(page, label):
    def on_console(message):
        if message.type == "error":
            problems.append(f"{label}: console error: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"{label}: page error: {error}"))
    page.on("requestfailed", lambda r: problems.append(f"{label}: request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: problems.append(f"{label}: HTTP {r.status} {r.url}") if r.status >= 400 else None)


def api_until(path, key, ready, page):
    """The API's answer at `path` once `ready(answer)` holds (a write the page made is
    visible), or the last answer after 5 s."""
    for _ in range(50):
        status, answer = api(path, key)
        if status == 200 and ready(answer):
            break
        page.wait_for_timeout(100)
    return answer


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def sign_in(page, key):
    page.goto(base + "/console")
    page.fill("#key", key)
    page.click("#signin button[type=submit]")


def main(p):
    browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox"])

    # ---- admin: providers, checked against the API, then one write
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    watch(page, "admin")
    sign_in(page, admin_key)
    # the overview: its totals are the API's, the money summed exactly
    page.wait_for_selector("#total-requests")
    page.wait_for_selector("#chart-requests canvas")
    frm = page.evaluate("new Date(Date.now() - 13 * 86400000).toISOString().slice(0, 10)") + "T00:00:00Z"
    status, by_day = api(f"/admin/usage/summary?group_by=day&from={frm}&limit=500", admin_key)
    check(status == 200, f"summary: {status}")
    check(page.inner_text("#total-requests") == str(sum(r["requests"] for r in by_day["data"])), "requests")
    check(page.inner_text("#total-errors") == str(sum(r["errors"] for r in by_day["data"])), "errors")
    spend = sum((Decimal(r["charged_usd"]) for r in by_day["data"]), Decimal(0))
    check(Decimal(page.inner_text("#total-spend").removesuffix(" USD")) == spend, f"spend {spend}")
    check(spend > 0, "the chat request before the test was charged")
    check(page.locator(".chart canvas").count() >= 3, "three charts drawn")
    status, by_model = api(f"/admin/usage/summary?group_by=model&from={frm}&limit=500", admin_key)
    for r in by_model["data"]:
        cells = page.locator(f'#by-model tr[data-key="{r["key"]}"] td')
        check(cells.nth(1).inner_text() == str(r["requests"]), f'model {r["key"]} requests')
        check(cells.nth(3).inner_text() == f'{r["charged_usd"]} USD', f'model {r["key"]} spend')
    page.screenshot(path=os.path.join(shots, "admin-overview.png"), full_page=True)
    page.click('nav a[href="#/providers"]')
    page.wait_for_selector("#providers")
    status, listed = api("/admin/providers?limit=200", admin_key)
    providers = listed["data"] if isinstance(listed, dict) else listed
    check(status == 200, f"admin API: {status}")
    check(page.locator("#providers tbody tr").count() == len(providers), "one row per provider")
    for provider in providers:
        row = page.locator(f'tr[data-slug="{provider["provider_slug"]}"]')
        state = row.locator(".badge").first.inner_text()
        check(state.startswith("enabled" if provider["is_active"] else "disabled"), f'{provider["provider_slug"]}: {state}')
        check(row.locator(".badge").nth(1).inner_text() == provider["health_status"], "health status")
    page.screenshot(path=os.path.join(shots, "admin-providers.png"), full_page=True)
    # a provider's details: its health history as the API has it, an edit saved
    openai = next(p for p in providers if p["provider_slug"] == "openai")
    watching = len(problems)
    status, _ = api("/admin/health-check", admin_key, method="POST")
    check(status in (200, 202), f"health check run: {status}")
    page.click(f'a[href="#/providers?provider={openai["id"]}"]')
    page.wait_for_selector("#provider-details")
    status, history = api(f'/admin/providers/{openai["id"]}/health?limit=100', admin_key)
    check(page.locator("#health-timeline .tick").count() == len(history["data"]) >= 1, "one tick per health check")
    check(page.locator("#health-timeline .tick").last.get_attribute("data-status") == history["data"][0]["status"], "newest last")
    page.fill('#edit-provider input[name="rate_limit_rpm"]', "abc")
    page.click("#edit-provider button[type=submit]")
    page.wait_for_selector("#edit-provider .error:not(:empty)")
    del problems[watching:]  # the refused edit's 400 was expected
    page.fill('#edit-provider input[name="rate_limit_rpm"]', "600")
    page.click("#edit-provider button[type=submit]")
    page.wait_for_selector("#provider-details")
    edited = api_until(f'/admin/providers/{openai["id"]}', admin_key, lambda p: p["rate_limit_rpm"] == 600, page)
    check(edited["rate_limit_rpm"] == 600, f"the edit saved through the API: {edited['rate_limit_rpm']}")
    page.screenshot(path=os.path.join(shots, "admin-provider-details.png"), full_page=True)
    target = next(p for p in providers if p["is_active"] and p["provider_slug"] == "groq")
    page.click('tr[data-slug="groq"] button')
    page.wait_for_selector('tr[data-slug="groq"] .badge.disabled')
    status, after = api(f'/admin/providers/{target["id"]}', admin_key)
    check(status == 200 and after["is_active"] is False, f"groq disabled through the API: {after}")
    # a top-up from the Users view, checked through the API
    page.click('nav a[href="#/users"]')
    page.wait_for_selector("#users")
    status, before = api("/admin/users/console-user", admin_key)
    row = page.locator('tr[data-user="console-user"]')
    check(row.locator(".balance").inner_text() == f'{before["credits_balance"]} USD', "the users table shows the API's balance")
    page.screenshot(path=os.path.join(shots, "admin-users.png"), full_page=True)
    row.locator('input[name="amount"]').fill("2.5")
    row.locator('input[name="reason"]').fill("browser test")
    row.locator("button").click()
    after_top_up = api_until("/admin/users/console-user", admin_key,
                             lambda u: u["credits_balance"] != before["credits_balance"], page)
    check(Decimal(after_top_up["credits_balance"]) - Decimal(before["credits_balance"]) == Decimal("2.5"),
          f'the top-up credited exactly 2.5: {before["credits_balance"]} -> {after_top_up["credits_balance"]}')
    page.wait_for_selector(f'tr[data-user="console-user"] .balance:text-is("{after_top_up["credits_balance"]} USD")')
    # one user's details: a cap set, a key issued (shown once, works), then revoked
    page.click('tr[data-user="console-user"] a')
    page.wait_for_selector("#user-details")
    page.fill('#user-cap input[name="monthly_cap_usd"]', "12.34")
    page.click("#user-cap button[type=submit]")
    page.wait_for_selector('#user-details h2:has-text("of 12.34 USD")')
    status, capped = api("/admin/users/console-user", admin_key)
    check(capped["monthly_cap_usd"] == "12.34", f"cap set through the API: {capped['monthly_cap_usd']}")
    page.fill('#issue-key input[name="name"]', "issued-in-browser")
    page.click("#issue-key button[type=submit]")
    page.wait_for_selector("#issued-key-value")
    issued = page.inner_text("#issued-key-value").strip()
    status, who = api("/v1/account", issued)
    check(status == 200 and who["user_id"] == "console-user" and who["key_role"] == "user", "the issued key works")
    status, listed_keys = api("/admin/users/console-user/api-keys", admin_key)
    issued_view = next(k for k in (listed_keys.get("data") or listed_keys) if k["name"] == "issued-in-browser")
    page.click(f'#user-keys tr[data-key-id="{issued_view["id"]}"] button')
    page.wait_for_selector(f'#user-keys tr[data-key-id="{issued_view["id"]}"] .badge.disabled')
    check(issued not in page.content(), "the issued key is not shown again")
    status, _ = api("/v1/account", issued)
    check(status == 401, "the revoked key is refused")
    page.screenshot(path=os.path.join(shots, "admin-user-details.png"), full_page=True)
    # a malformed amount is refused by the page, before any request
    row = page.locator('tr[data-user="console-user"]')
    row.locator('input[name="amount"]').fill("ten")
    row.locator("button").click()
    page.wait_for_selector('tr[data-user="console-user"] .error')
    # the usage explorer: rows and filters as the API answers them, the CSV download
    page.goto(base + "/console#/usage")
    page.wait_for_selector("#usage")
    status, usage = api("/admin/usage?limit=50", admin_key)
    check(page.locator("#usage tbody tr").count() == len(usage["data"]), "one row per usage row")
    page.fill('#usage-filters input[name="user"]', "console-user")
    page.select_option('#usage-filters select[name="status"]', "ok")
    page.click("#usage-filters button[type=submit]")
    page.wait_for_url("**/console#/usage?user=console-user&status=ok")
    page.wait_for_selector("#usage")
    status, mine = api("/admin/usage?user=console-user&status=ok&limit=50", admin_key)
    check(mine["total"] >= 1, "the chat request is in the usage")
    check(page.locator("#usage tbody tr").count() == len(mine["data"]), "filtered rows")
    page.screenshot(path=os.path.join(shots, "admin-usage.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#usage-csv")
    csv_path = os.path.join(shots, "usage.csv")
    download.value.save_as(csv_path)
    with open(csv_path, newline="") as f:
        records = list(csv.DictReader(f))
    check(len(records) == mine["total"], f'CSV rows {len(records)} = {mine["total"]}')
    check(sum((Decimal(r["charged_usd"]) for r in records), Decimal(0))
          == sum((Decimal(r["charged_usd"]) for r in mine["data"]), Decimal(0)), "CSV charges")
    # every cell is the API's value, and one a spreadsheet would run as a formula (models
    # named `=SUM(1,2)`, `+…`, `@…` and a request id `-3-4`, made by console.rs) is text:
    # `'` first, inside a quoted cell
    with open(csv_path, newline="") as f:
        raw = f.read()
    status, all_mine = api("/admin/usage?user=console-user&status=ok&limit=500", admin_key)
    neutralised = set()
    for record, row in zip(records, all_mine["data"]):
        for column, cell in record.items():
            value = row[column]
            text = "" if value is None else ("true" if value else "false") if isinstance(value, bool) else str(value)
            if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
                neutralised.add(text[0])
                quoted = '"' + ("'" + text).replace('"', '""') + '"'
                check(quoted in raw, f"{column}: {text!r} written as {quoted} in the CSV")
                text = "'" + text
            check(cell == text, f"CSV {column}: {cell!r}, the API says {value!r}")
    check(neutralised >= {"=", "+", "-", "@"}, f"formula cells in the CSV: {neutralised}")
    page.goto(base + "/console#/usage?status=error")
    page.wait_for_selector("text=No usage matches these filters.")
    # the audit log shows the writes made above, newest first, as the API does
    page.click('nav a[href="#/audit"]')
    page.wait_for_selector("#audit")
    status, audit = api("/admin/audit-log?limit=50", admin_key)
    check(page.locator("#audit tbody tr").count() == len(audit["data"]), "one row per audit entry")
    check(page.locator("#audit tbody tr").first.locator("td").nth(2).inner_text() == audit["data"][0]["action"], "newest first")
    actions = {e["action"] for e in audit["data"]}
    check(any("credit" in a for a in actions) and any("provider" in a for a in actions), f"the top-up and the disable: {actions}")
    page.screenshot(path=os.path.join(shots, "admin-audit.png"), full_page=True)
    # models: a bad price is refused by the API and shown next to its field; a good model
    # is created; a routing rule turned off; each checked through the API
    page.goto(base + "/console#/models")
    page.wait_for_selector("#create-model")
    status, models_before = api("/admin/models?limit=500", admin_key)
    check(page.locator("#models tbody tr").count() == len(models_before["data"]), "one row per model")
    form = page.locator("#create-model")
    form.locator('select[name="provider_id"]').select_option(label="openai")
    form.locator('input[name="model_id"]').fill("console-model")
    form.locator('input[name="context_window"]').fill("128000")
    form.locator('input[name="cost_per_1m_input_tokens"]').fill("-1")
    form.locator('input[name="cost_per_1m_output_tokens"]').fill("0.60")
    watching = len(problems)
    form.locator("button[type=submit]").click()
    page.wait_for_selector('#create-model .field-error[data-for="cost_per_1m_input_tokens"]:not(:empty)')
    # The 400 was expected: not a problem.
    del problems[watching:]
    form.locator('input[name="cost_per_1m_input_tokens"]').fill("0.15")
    form.locator("button[type=submit]").click()
    page.wait_for_selector('#models strong:text-is("console-model")')
    status, models_after = api("/admin/models?limit=500", admin_key)
    made = [m for m in models_after["data"] if m["model_id"] == "console-model"]
    check(len(made) == 1 and made[0]["cost_per_1m_input_tokens"] == "0.15", f"model created: {made}")
    status, rules = api("/admin/routing-rules?limit=500", admin_key)
    rule = next(r for r in rules["data"] if r["is_active"])
    page.click(f'tr[data-rule="{rule["id"]}"] button')
    page.wait_for_selector(f'tr[data-rule="{rule["id"]}"] .badge.disabled')
    status, rule_after = api(f'/admin/routing-rules/{rule["id"]}', admin_key)
    check(rule_after["is_active"] is False, "the rule turned off through the API")
    # a rule: a weight of 0 refused at its field, then added; a model's prices edited
    watching = len(problems)
    for weight, outcome in (("0", '#create-rule .field-error[data-for="weight"]:not(:empty)'),
                            ("25", None)):
        rule_form = page.locator("#create-rule")
        rule_form.locator('select[name="model_id"]').select_option(label="console-model (openai)")
        rule_form.locator('select[name="power_level"]').select_option("eco")
        rule_form.locator('input[name="priority"]').fill("3")
        rule_form.locator('input[name="weight"]').fill(weight)
        rule_form.locator("button[type=submit]").click()
        if outcome:
            page.wait_for_selector(outcome)
            del problems[watching:]  # the refused weight's 400 was expected
    page.wait_for_selector('#rules a:text-is("console-model (openai)")')
    status, rules = api("/admin/routing-rules?limit=500", admin_key)
    new_rules = [r for r in rules["data"] if r["model_name"] == "console-model"]
    check(len(new_rules) == 1 and new_rules[0]["weight"] == 25 and new_rules[0]["power_level"] == "eco", f"rule: {new_rules}")
    page.click(f'#rules a[href="#/models?rule={new_rules[0]["id"]}"]')
    page.wait_for_selector("#edit-rule")
    page.fill('#edit-rule input[name="weight"]', "40")
    page.click("#edit-rule button[type=submit]")
    rule_edited = api_until(f'/admin/routing-rules/{new_rules[0]["id"]}', admin_key, lambda r: r["weight"] == 40, page)
    check(rule_edited["weight"] == 40, f"rule edited: {rule_edited['weight']}")
    page.click(f'#models a[href="#/models?model={made[0]["id"]}"]')
    page.wait_for_selector("#edit-model")
    page.fill('#edit-model input[name="cost_per_1m_input_tokens"]', "0.2")
    page.click("#edit-model button[type=submit]")
    edited_model = api_until(f'/admin/models/{made[0]["id"]}', admin_key,
                             lambda m: Decimal(m["cost_per_1m_input_tokens"]) == Decimal("0.2"), page)
    check(Decimal(edited_model["cost_per_1m_input_tokens"]) == Decimal("0.2"), f"price edited: {edited_model['cost_per_1m_input_tokens']}")
    page.screenshot(path=os.path.join(shots, "admin-models.png"), full_page=True)
    check(context.cookies() == [], "no cookies")
    check(page.evaluate("localStorage.length") == 0, "nothing in localStorage")
    check(page.evaluate("sessionStorage.length") == 1, "the key in sessionStorage")
    page.click("#signout")
    page.wait_for_selector("#signin")
    check(page.evaluate("sessionStorage.length") == 0, "signed out: the key is gone")
    context.close()

    # ---- user: the account, exactly as the API says; admin views refused
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    watch(page, "user")
    sign_in(page, user_key)
    page.wait_for_selector("#balance")
    status, account = api("/v1/account", user_key)
    check(page.inner_text("#balance") == f'{account["credits_balance"]} USD', "balance")
    check(page.inner_text("#held") == f'{account["credits_held"]} USD', "held")
    check(page.inner_text("#month-spend") == f'{account["month_spend"]} USD', "month spend")
    check(page.locator('nav a[href="#/providers"]').count() == 0, "no admin entry in a user's menu")
    page.screenshot(path=os.path.join(shots, "user-account.png"), full_page=True)
    # own usage: the figures of GET /v1/usage(/summary), only this user's
    page.click('nav a[href="#/activity"]')
    page.wait_for_selector("#my-recent")
    page.wait_for_selector("#chart-my-requests canvas")
    frm = page.evaluate("new Date(Date.now() - 13 * 86400000).toISOString().slice(0, 10)") + "T00:00:00Z"
    status, mine_by_day = api(f"/v1/usage/summary?group_by=day&from={frm}&limit=500", user_key)
    check(page.inner_text("#my-requests") == str(sum(r["requests"] for r in mine_by_day["data"])), "my requests")
    my_spend = sum((Decimal(r["charged_usd"]) for r in mine_by_day["data"]), Decimal(0))
    check(Decimal(page.inner_text("#my-spend").removesuffix(" USD")) == my_spend, "my spend")
    status, my_rows = api("/v1/usage?limit=20", user_key)
    check(page.locator("#my-recent tbody tr").count() == len(my_rows["data"]) >= 1, "my latest requests")
    check(all(r["user_id"] == "console-user" for r in my_rows["data"]), "only my rows")
    page.screenshot(path=os.path.join(shots, "user-usage.png"), full_page=True)
    # own gateway keys: created (shown once), then revoked; checked through the API
    page.click('nav a[href="#/keys"]')
    page.wait_for_selector("#create-key")
    page.fill('#create-key input[name="name"]', "browser-made")
    page.click("#create-key button[type=submit]")
    page.wait_for_selector("#new-key")
    new_key = page.inner_text("#new-key").strip()
    status, made = api("/v1/account", new_key)
    check(status == 200 and made["user_id"] == "console-user", "the key shown once works")
    page.click("#created-key button")
    page.wait_for_selector("#own-keys")
    status, keys = api("/v1/api-keys", user_key)
    made_view = next(k for k in keys["data"] if k["name"] == "browser-made")
    check(new_key not in page.content(), "the key is not shown again")
    page.click(f'tr[data-key-id="{made_view["id"]}"] button')
    page.wait_for_selector(f'tr[data-key-id="{made_view["id"]}"] .badge.disabled')
    status, _ = api("/v1/account", new_key)
    check(status == 401, f"the revoked key is refused: {status}")
    # a provider key (BYOK): added, shown masked only, turned off, deleted
    provider_key = "sk-console-byok-0123456789abcdef"
    page.fill('#add-byok input[name="provider"]', "openai")
    page.fill('#add-byok input[name="api_key"]', provider_key)
    page.click("#add-byok button[type=submit]")
    page.wait_for_selector('#byok tr[data-provider="openai"]')
    check(provider_key not in page.content(), "the provider key is never shown")
    status, masked = api("/v1/byok/openai", user_key)
    check(status == 200 and masked["is_active"], f"BYOK stored: {masked}")
    check(page.inner_text('#byok tr[data-provider="openai"] .key-hint') == masked["key_hint"], "masked hint")
    watching = len(problems)
    page.click('#byok tr[data-provider="openai"] button:text("Check")')
    page.wait_for_selector('#byok tr[data-provider="openai"] .badge:text-matches("valid|refused")')
    del problems[watching:]  # a refused check may log the provider's answer
    status, checked = api("/v1/byok/openai", user_key)
    badge = page.inner_text('#byok tr[data-provider="openai"] td:nth-child(3) .badge')
    check((badge == "valid") == bool(checked["is_validated"]), f"check result shown as the API says: {badge} / {checked}")
    page.screenshot(path=os.path.join(shots, "user-keys.png"), full_page=True)
    page.click('#byok tr[data-provider="openai"] button:text("Turn off")')
    page.wait_for_selector('#byok tr[data-provider="openai"] .badge.disabled')
    status, masked = api("/v1/byok/openai", user_key)
    check(masked["is_active"] is False, "turned off through the API")
    page.click('#byok tr[data-provider="openai"] button:text("Delete")')
    page.wait_for_selector("text=No provider key")
    status, _ = api("/v1/byok/openai", user_key)
    check(status == 404, f"deleted: {status}")
    page.goto(base + "/console#/providers")
    page.wait_for_selector("#needs-admin")
    status, _ = api("/admin/providers", user_key)
    check(status == 403, f"the API refuses a user key: {status}")
    page.screenshot(path=os.path.join(shots, "user-admin-refused.png"), full_page=True)
    context.close()

    # ---- a wrong key (its 401 is expected: not watched)
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, "sk-sb-not-a-real-key-000000000000000000000000")
    page.wait_for_selector("text=That key was not accepted.")
    context.close()
    browser.close()

with sync_playwright() as playwright:
    try:
        main(playwright)
    except Exception:
        # What the browser said before the failure is usually the cause.
        print("browser problems so far:\n" + "\n".join(problems), file=sys.stderr)
        raise

if problems:
    raise SystemExit("browser problems:\n" + "\n".join(problems))
print("console: ok")
