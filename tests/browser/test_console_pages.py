"""The console's pages in headless Chromium against a real gateway and simulator:
signing in and out (the key in no URL, log or script-readable cookie), a reply
streamed token by token, Stop and Esc cancelling the upstream stream with the cost so
far shown, what a reply says about itself (tier, guards, cache, memory, a second
model), keys made in the page and used from the openai SDK, a virtual key kept to
its own, an open gateway, and every page at a desk's and a phone's width. No page may
log an error or fail a request (conftest.Watch)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import openai
import pytest
from playwright.async_api import Browser, Locator, expect

from tests.browser.conftest import (
    DESK,
    MASTER,
    PHONE,
    Console,
    close_console,
    console_config,
    new_console,
    screenshot,
)
from tests.conftest import gateway_config
from tests.helpers.admin import admin, create_key, ledger_rows
from tests.helpers.clients import openai_client
from tests.helpers.gateway import GatewayHandle, start_gateway
from tests.helpers.raw import request
from tests.helpers.sim import SimHandle

USD = re.compile(r"\$(\d+(?:\.\d+)?(?:e-?\d+)?)")


def usd_in(text: str) -> float:
    m = USD.search(text)
    assert m, text
    return float(m.group(1))


def last_reply(c: Console, lane: int = 0) -> Locator:
    return c.page.locator(".lane").nth(lane).locator(".msg.assistant").last


async def send(c: Console, text: str) -> None:
    await c.page.fill("#prompt", text)
    await c.page.press("#prompt", "Enter")


async def finished(c: Console, lane: int = 0) -> Locator:
    """The lane's last reply, once it stopped streaming and its figures are shown."""
    reply = last_reply(c, lane)
    await expect(reply.locator('[data-meta="latency"]')).to_be_visible()
    return reply


async def playground(c: Console) -> None:
    """Signed in with the master key, on the playground, its models listed."""
    await c.sign_in(MASTER)
    await expect(c.page.locator("#model")).to_have_value("sim")


def unique(text: str) -> str:
    """A prompt no earlier test sent (the cache is on)."""
    return f"{text} [{secrets.token_hex(4)}]"


async def test_sign_in_keeps_the_key_out_of_urls_logs_and_scripts(console: Console) -> None:
    c = console
    await c.open()
    await expect(c.page.locator("#nav")).to_be_hidden()
    await c.sign_in(MASTER)
    await expect(c.page.locator("#who .signed-in")).to_have_text("Master key")
    await expect(c.page.locator('#nav a[data-page="keys"]')).to_be_visible()

    cookie = await c.session_cookie()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert MASTER not in cookie["value"]
    assert await c.page.evaluate("document.cookie") == ""  # out of scripts' reach
    assert await c.page.evaluate("JSON.stringify({...localStorage, ...sessionStorage})") == "{}"
    assert all(MASTER not in r.url for r in c.watch.requests)
    assert MASTER not in c.page.url and MASTER not in c.gw.log()
    sign_in = next(r for r in c.watch.requests if r.url.endswith("/console/session")
                   and r.method == "POST")
    assert sign_in.headers["x-tollway-console"] == "1"

    await c.page.click("#who button")  # sign out
    await expect(c.page.locator("#key")).to_be_visible()
    assert [x for x in await c.context.cookies() if x["value"]] == []
    # The old token is dead on the gateway too.
    headers = {"x-tollway-console": "1", "cookie": f"tollway_session={cookie['value']}"}
    assert request(c.gw.url, "GET", "/admin/keys", headers=headers).status == 401


async def test_a_wrong_key_is_told_and_opens_nothing(console: Console) -> None:
    c = console
    c.watch.expect(401, "/console/session")
    await c.open()
    await c.page.fill("#key", "tw-not-a-real-key")
    await c.page.click("form.sign-in button[type=submit]")
    await expect(c.page.locator("form.sign-in .error")).to_contain_text("no such key")
    assert await c.context.cookies() == []
    assert await c.page.input_value("#key") == "tw-not-a-real-key"  # still there to fix


async def test_a_reply_streams_into_the_page_token_by_token(console: Console,
                                                            fresh_sim: SimHandle) -> None:
    c = console
    fresh_sim.config(token_ms=30, output_tokens=40)
    await playground(c)
    # Record the reply's length at every animation frame until it stops streaming.
    await c.page.evaluate("""() => {
        window.growth = {lengths: [], done: false};
        const tick = () => {
            const reply = document.querySelector(".lane .msg.assistant");
            if (reply) {
                const n = reply.querySelector(".msg-text").textContent.length;
                if (growth.lengths.at(-1) !== n) growth.lengths.push(n);
                if (!reply.classList.contains("streaming")) { growth.done = true; return; }
            }
            requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
    }""")
    await send(c, unique("Tell me about toll roads"))
    await c.page.wait_for_function("() => window.growth.done")
    lengths: list[int] = await c.page.evaluate("() => window.growth.lengths")
    assert len(lengths) >= 10, lengths  # it arrived in pieces, frame after frame
    assert lengths == sorted(lengths), lengths

    reply = await finished(c)
    meta = reply.locator(".meta")
    await expect(meta.locator('[data-meta="tokens"]')).to_contain_text("in · 40 out")
    cost = usd_in(await meta.locator('[data-meta="cost"]').inner_text())
    assert "estimated" not in await meta.locator('[data-meta="cost"]').inner_text()
    await expect(meta.locator('[data-meta="deployment"]')).to_contain_text("sim-model (openai)")
    await expect(meta.locator('[data-meta="cache"]')).to_contain_text("miss")
    await expect(meta.locator('[data-meta="guards"]')).to_contain_text("nothing redacted")
    await expect(meta.locator('[data-meta="ttft"]')).to_contain_text("ms")
    # The cost is the ledger's, priced from the simulator's usage.
    row = next(r for r in ledger_rows(c.gw.url, MASTER)
               if r["output_tokens"] == 40 and r["stream"] and r["key_id"] is None
               and r["model"] == "sim-model" and r["cache"] == "miss"
               and abs(r["cost_usd"] - cost) < 1e-9)
    assert row["outcome"] == "ok"
    await expect(c.page.locator(".lane-total")).to_contain_text("1 reply")


@pytest.mark.parametrize("how", ["button", "Escape"])
async def test_stop_cancels_the_upstream_stream_and_shows_the_cost_so_far(
        console: Console, fresh_sim: SimHandle, how: str) -> None:
    c = console
    fresh_sim.config(token_ms=40, output_tokens=400)
    c.watch.expect_abort("/v1/chat/completions")  # the stream it stops
    await playground(c)
    await send(c, unique("Write a long story about a bridge"))
    text = last_reply(c).locator(".msg-text")
    await expect(text).to_have_text(re.compile(r"\S+( \S+){8}"))  # a few words arrived
    await expect(c.page.locator("#stop")).to_be_enabled()
    if how == "button":
        await c.page.click("#stop")
    else:
        await c.page.keyboard.press("Escape")

    reply = await finished(c)
    await expect(reply).to_have_class(re.compile(r"\bstopped\b"))
    await expect(reply.locator('[data-meta="stopped"]')).to_contain_text("cost so far")
    cost = reply.locator('[data-meta="cost"]')
    await expect(cost).to_contain_text("(estimated)")
    assert usd_in(await cost.inner_text()) > 0
    tokens = await reply.locator('[data-meta="tokens"]').inner_text()
    out = int(re.search(r"(\d+) out", tokens).group(1))  # type: ignore[union-attr]
    assert 0 < out < 400, tokens

    stats = fresh_sim.wait_for(lambda st: st["streams_cancelled"] >= 1, timeout=3)
    assert stats["streams_cancelled"] == 1 and stats["streams_completed"] == 0
    assert stats["tokens_generated"] < 400
    await expect(c.page.locator("#send")).to_be_enabled()
    await expect(c.page.locator("#stop")).to_be_disabled()


async def test_a_reply_says_its_tier_guards_cache_and_memory(console: Console,
                                                             fresh_sim: SimHandle) -> None:
    c = console
    await playground(c)

    # A short question to the strong tier goes to the cheap one, and says why.
    await c.page.select_option("#model", "tier:strong")
    await send(c, unique("Hi"))
    tier = (await finished(c)).locator('[data-meta="tier"]')
    await expect(tier).to_contain_text("cheap (from strong)")

    # A guard redacts an email before it goes upstream.
    await send(c, unique("Mail me at jane.doe@example.com please"))
    guards = (await finished(c)).locator('[data-meta="guards"]')
    await expect(guards).to_contain_text(re.compile(r"pii:redact:.*email"))

    # The same question twice: the second answer is the cache's, at $0.
    await c.page.select_option("#model", "sim")
    await c.page.click("#new-chat")
    question = unique("What is a toll plaza?")
    await send(c, question)
    await expect((await finished(c)).locator('[data-meta="cache"]')).to_contain_text("miss")
    await c.page.click("#new-chat")
    await send(c, question)
    hit = await finished(c)
    await expect(hit.locator('[data-meta="cache"]')).to_contain_text("hit")
    await expect(hit.locator('[data-meta="cost"]')).to_contain_text("$0")
    await expect(hit.locator('[data-meta="saved"]')).to_be_visible()

    # Server-side memory: the second turn sends only itself; the gateway adds the rest.
    await c.page.check("#memory")
    await send(c, unique("My name is Ada."))
    await expect((await finished(c)).locator('[data-meta="memory"]')).to_contain_text(
        "console-")
    await send(c, unique("What is my name?"))
    second = (await finished(c)).locator('[data-meta="memory"]')
    await expect(second).to_contain_text(re.compile(r"console-\w+ · \d+ history tokens"))
    chats = [r for r in c.watch.requests if r.url.endswith("/v1/chat/completions")]
    conversation = chats[-1].headers["x-tollway-conversation"]
    assert chats[-2].headers["x-tollway-conversation"] == conversation
    assert [m["role"] for m in json.loads(chats[-1].post_data or "")["messages"]] == ["user"]
    stored = admin(c.gw.url, MASTER, "GET",
                   f"/admin/conversations/{conversation}?owner=master")
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2


async def test_two_models_answer_side_by_side_with_their_costs(console: Console,
                                                               fresh_sim: SimHandle) -> None:
    c = console
    await playground(c)
    await c.page.select_option("#compare", "sim-claude")
    await expect(c.page.locator(".lane")).to_have_count(2)
    await send(c, unique("Compare these two"))
    left, right = await finished(c, 0), await finished(c, 1)
    await expect(left.locator('[data-meta="deployment"]')).to_contain_text("(openai)")
    await expect(right.locator('[data-meta="deployment"]')).to_contain_text("(anthropic)")
    costs = [usd_in(await r.locator('[data-meta="cost"]').inner_text()) for r in (left, right)]
    assert costs[1] > costs[0] > 0  # claude-sim is priced higher than sim-model
    for lane, cost in enumerate(costs):
        total = c.page.locator(".lane").nth(lane).locator(".lane-total")
        assert usd_in(await total.inner_text()) == pytest.approx(cost)


async def test_a_key_made_in_the_page_works_from_the_sdk_and_shows_its_spend(
        browser: Browser, cgw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = await new_console(browser, cgw, DESK)
    try:
        await c.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                          origin=cgw.url)
        await c.sign_in(MASTER)
        await c.go("keys")
        name = unique("sdk-bot")
        await c.page.fill('form.create input[name="name"]', name)
        await c.page.fill('form.create input[name="team"]', "search")
        await c.page.fill('form.create input[name="usd"]', "5")
        await c.page.click("#create-key")
        secret_box = c.page.locator(".new-secret")
        await expect(secret_box).to_have_text(re.compile(r"^tw-"))
        secret = await secret_box.inner_text()
        await c.page.click("button.copy")
        await expect(c.page.locator(".copied")).to_have_text("Copied")
        assert await c.page.evaluate("navigator.clipboard.readText()") == secret
        row = c.page.locator("tr", has_text=name)
        await expect(row.locator(".status")).to_have_text("active")
        key_id = await row.get_attribute("data-key-id")

        sdk = openai_client(cgw.base_url, secret)
        for _ in range(2):
            got = await sdk.chat.completions.create(
                model="sim", messages=[{"role": "user", "content": unique("from the SDK")}])
            assert got.choices[0].message.content
        await c.reload()
        row = c.page.locator(f'tr[data-key-id="{key_id}"]')
        await expect(row.locator('[data-col="requests"]')).to_have_text("2")
        spent = usd_in(await row.locator('[data-col="spend"]').inner_text())
        spend = admin(cgw.url, MASTER, "GET", "/admin/spend?by=key")["data"]
        assert spent == pytest.approx(next(r["cost_usd"] for r in spend
                                           if r["group"] == key_id), rel=0.01)
        assert spent > 0

        # Rotate: a new secret, shown once; the old key works through its grace period.
        await row.get_by_role("button", name="Rotate").click()
        await row.get_by_role("button", name="Rotate now").click()
        await expect(secret_box).not_to_have_text(secret)
        rotated = await secret_box.inner_text()
        assert rotated.startswith("tw-")
        await expect(c.page.locator(f'tr[data-key-id="{key_id}"] .status')).to_have_text(
            "rotating")
        # Revoke the new one: the SDK is refused at once.
        new_row = c.page.locator("tbody tr").first
        await expect(new_row.locator(".status")).to_have_text("active")
        await new_row.get_by_role("button", name="Revoke").click()
        await new_row.get_by_role("button", name="Revoke for good").click()
        await expect(c.page.locator("tbody tr").first.locator(".status")).to_have_text("revoked")
        with pytest.raises(openai.AuthenticationError):
            await openai_client(cgw.base_url, rotated).chat.completions.create(
                model="sim", messages=[{"role": "user", "content": "refused"}])
        await c.page.click("text=I have stored it")
        await expect(secret_box).to_be_hidden()
    finally:
        await close_console(c)


async def test_a_virtual_key_sees_its_own_playground_and_nothing_else(
        console: Console, fresh_sim: SimHandle) -> None:
    c = console
    secret, record = create_key(c.gw.url, MASTER, name="viewer", team="web")
    await c.sign_in(secret)
    await expect(c.page.locator("#who .signed-in")).to_contain_text("viewer (tw-")
    await expect(c.page.locator('#nav a[data-page="keys"]')).to_be_hidden()
    await send(c, unique("Hello from a virtual key"))
    await expect((await finished(c)).locator('[data-meta="cost"]')).to_contain_text("$")
    rows = [r for r in ledger_rows(c.gw.url, MASTER) if r["key_id"] == record["id"]]
    assert len(rows) == 1 and rows[0]["outcome"] == "ok"

    await c.open("#/keys")
    await expect(c.page.locator("main")).to_contain_text("managed with the master key")
    assert not [r for r in c.watch.requests if "/admin/" in r.url]

    # The API refuses the key list and others' spend to this session, as to the key.
    cookie = await c.session_cookie()
    headers = {"x-tollway-console": "1", "cookie": f"tollway_session={cookie['value']}"}
    for path in ("/admin/keys", "/admin/spend?by=key", "/admin/ledger"):
        assert request(c.gw.url, "GET", path, headers=headers).status == 403, path
        assert request(c.gw.url, "GET", path,
                       headers={"authorization": f"Bearer {secret}"}).status == 403, path

    # Revoked, its session ends: the page asks to sign in again.
    admin(c.gw.url, MASTER, "POST", f"/admin/keys/{record['id']}/revoke")
    await c.reload()
    await expect(c.page.locator("#key")).to_be_visible()


@pytest.fixture(scope="module")
def open_gw(sim: SimHandle) -> Iterator[GatewayHandle]:
    """No master key: the gateway is open."""
    handle = start_gateway(gateway_config(sim.url))
    try:
        yield handle
    finally:
        handle.stop()


async def test_an_open_gateway_says_so_and_chats_without_a_key(
        browser: Browser, open_gw: GatewayHandle, fresh_sim: SimHandle) -> None:
    c = await new_console(browser, open_gw, DESK)
    try:
        await c.open()
        await expect(c.page.locator("#banner")).to_contain_text("This gateway is open")
        await expect(c.page.locator('#nav a[data-page="keys"]')).to_be_hidden()
        await send(c, unique("Hello, open gateway"))
        await expect((await finished(c)).locator('[data-meta="tokens"]')).to_contain_text(
            "16 out")
        await c.go("dashboard")
        await expect(c.page.locator("main")).to_contain_text("needs a master key")
        assert not [r for r in c.watch.requests if "/admin/" in r.url]
    finally:
        await close_console(c)


@pytest.fixture(scope="module")
def shots_gw(sim: SimHandle) -> Iterator[GatewayHandle]:
    """A gateway of the screenshots' own: two keys that have spent a little."""
    handle = start_gateway(console_config(sim.url), env={"TOLLWAY_MASTER_KEY": MASTER})
    try:
        for name, team in (("search-bot", "search"), ("support-bot", "support")):
            secret, _ = create_key(handle.url, MASTER, name=name, team=team,
                                   budgets=[{"usd": 5, "period": "day"}])
            for i in range(3 if team == "search" else 1):
                assert request(handle.url, "POST", "/v1/chat/completions", {
                    "model": "sim", "messages": [{"role": "user", "content": f"q{i}"}]},
                    {"authorization": f"Bearer {secret}"}).status == 200
        yield handle
    finally:
        handle.stop()


@pytest.mark.parametrize("size", ["desk", "phone"])
async def test_every_page_renders_at_a_desk_and_a_phone_width(
        browser: Browser, shots_gw: GatewayHandle, fresh_sim: SimHandle, size: str) -> None:
    viewport = DESK if size == "desk" else PHONE
    c = await new_console(browser, shots_gw, viewport)

    async def fits(page: str) -> None:
        wide = await c.page.evaluate("document.documentElement.scrollWidth")
        assert wide <= viewport["width"], (page, wide)
        await screenshot(c.page, f"{page}-{size}")

    try:
        await c.open()
        await expect(c.page.locator("#key")).to_be_visible()
        await fits("sign-in")
        await playground(c)
        await c.page.fill("#system", "You are a concise assistant for a toll-road operator.")
        await c.page.select_option("#compare", "sim-claude")
        await send(c, f"What does a toll gateway do? ({size})")
        await finished(c, 0)
        await finished(c, 1)
        await fits("playground")
        await c.go("keys")
        await expect(c.page.locator("table.keys tbody tr")).to_have_count(2)
        await fits("keys")
    finally:
        await close_console(c)
