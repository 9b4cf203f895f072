// Drives the /ui dashboard of a running `ctibridge demo` in headless Chromium (Debian's
// `chromium` package, through playwright-core; no browser download, no network).
//
//   node tests/browser/ui.mjs <dashboard-or-base-url> <token> <artifact-dir>
//
// What it checks, as an operator would see it:
//  1. the page takes the token from `#token=…` into sessionStorage, drops it from the address
//     and connects the live stream; the six demo phones are listed and registered;
//  2. a live call appears in the live-calls table;
//  3. a DND toggle switches the phone: the button changes, the bridge's API reports the new
//     state, and the simulated phone itself (asked directly over its Active URI) has it;
//  4. click-to-call through the PBX: the request shows in #dial-requests, reaches `answered`,
//     and the live call carrying its request id appears;
//  5. while /readyz says the AMI link is down (answered here by the test), a banner says so.
// Screenshots go to <artifact-dir>; so do the browser console and a summary. Exit code 0 only
// when everything held; failures say what was expected and what was seen.
//
// Environment: CHROMIUM (default /usr/bin/chromium).

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [urlArg, token, artifacts] = process.argv.slice(2);
if (!urlArg || !token || !artifacts) {
  console.error("usage: node ui.mjs <dashboard-or-base-url> <token> <artifact-dir>");
  process.exit(2);
}
const origin = new URL(urlArg).origin;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
fs.mkdirSync(artifacts, { recursive: true });

// The demo's simulated phones keep their factory web credentials.
const PHONE_AUTH = "Basic " + Buffer.from("admin:admin").toString("base64");
const started = Date.now();
const log = [];
const note = (msg) => {
  const line = `[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`;
  log.push(line);
  console.log(line);
};

async function apiGet(p) {
  const res = await fetch(origin + p, { headers: { Authorization: "Bearer " + token } });
  if (!res.ok) throw new Error(`GET ${p}: HTTP ${res.status}`);
  return res.json();
}

// Polls `probe` until it returns a truthy value; throws `what` with the last value seen.
async function until(what, probe, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs / 1000}s (last seen: ${JSON.stringify(last)})`);
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "ctibridge-ui-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = context.pages()[0] || (await context.newPage());
const consoleLines = [];
const pageErrors = [];
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => pageErrors.push(e.message));
// The page may talk to its own bridge only.
const foreign = [];
page.on("request", (r) => {
  const u = new URL(r.url());
  if (u.protocol.startsWith("http") && u.origin !== origin) foreign.push(r.url());
});

const shot = async (name) => {
  const file = path.join(artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  note(`screenshot ${file}`);
};

let failed = null;
try {
  // 1. Token, stream, phones.
  await page.goto(`${origin}/ui#token=${encodeURIComponent(token)}`);
  await page.waitForSelector('#stream-state[data-state="on"]', { timeout: 20000 });
  const kept = await page.evaluate(() => sessionStorage.getItem("ctibridge.token"));
  if (kept !== token) throw new Error(`token in sessionStorage: ${kept}`);
  if (page.url().includes("token=")) throw new Error(`token left in the address: ${page.url()}`);
  await until("six registered phones", async () =>
    (await page.locator("#phones tbody tr").count()) >= 6 &&
    (await page.locator("#phones tbody tr td:nth-child(3) .on").count()) >= 6, 20000);
  note("dashboard connected, 6 phones registered");

  // 2. A live call.
  const call = await until("a live call in #live-calls", async () => {
    const row = page.locator("#live-calls tbody tr").first();
    return (await row.count()) ? await row.innerText() : null;
  }, 60000);
  note(`live call: ${call.replace(/\s+/g, " ")}`);
  await shot("01-live-call.png");

  // 3. DND on phone 101 (a Yealink, whose own state can be read back with phonecfg=get).
  const ext = "101";
  const button = page.locator(`.dnd-toggle[data-ext="${ext}"]`);
  const before = await button.getAttribute("data-dnd");
  const want = before === "on" ? "off" : "on";
  await button.click();
  await page.waitForSelector(`.dnd-toggle[data-ext="${ext}"][data-dnd="${want}"]:not([disabled])`, { timeout: 20000 });
  note(`DND button of ${ext}: ${before} → ${want}`);
  const phone = await until(`GET /api/v1/phones/${ext} with dnd ${want}`, async () => {
    const p = await apiGet(`/api/v1/phones/${ext}`);
    return p.state && p.state.dnd === (want === "on") ? p : null;
  }, 15000);
  const own = await until(`the simulated phone ${ext} reporting DND|${want === "on" ? 1 : 0}`, async () => {
    const res = await fetch(`http://${phone.address}/servlet?phonecfg=get&dnd=1`, { headers: { Authorization: PHONE_AUTH } });
    const text = await res.text();
    return text.includes(`DND|${want === "on" ? 1 : 0}`) ? text.trim() : null;
  }, 15000);
  note(`bridge API: dnd ${phone.state.dnd} (last event ${phone.state.last_event}); phone itself: ${own}`);
  await shot("02-dnd.png");

  // 4. Click-to-call through the PBX to an outside number. The simulated people keep
  // calling meanwhile, so a from-phone can turn busy: then the request fails and another
  // free phone is tried.
  // A phone the simulated PBX reported busy is not tried again (the PBX may hold it for a
  // replayed recording while the phone itself looks idle); the far end may also be busy or
  // not answer (20% of outside calls), so several attempts are allowed.
  const ATTEMPTS = 8;
  const busyFrom = new Set();
  let answered = null;
  for (let attempt = 1; attempt <= ATTEMPTS && !answered; attempt++) {
    const from = await until("a free phone without DND", async () => {
      const free = [];
      for (const row of await page.locator("#phones tbody tr").all()) {
        const e = await row.getAttribute("data-ext");
        const idle = (await row.locator(".phone-call").getAttribute("data-state")) === "idle";
        const dnd = await row.locator(".dnd-toggle").getAttribute("data-dnd");
        if (idle && dnd !== "on" && e !== ext) free.push(e);
      }
      return free.find((e) => !busyFrom.has(e)) || (free.length ? (busyFrom.clear(), free[0]) : null);
    }, 30000);
    const known = new Set(await page.locator("#dial-requests li").evaluateAll((els) => els.map((e) => e.dataset.request)));
    await page.selectOption("#dial-from", from);
    await page.fill("#dial-to", "+1 555 0100");
    await page.selectOption("#dial-via", "pbx");
    await page.click('#dial-form button[type="submit"]');
    const id = await until("the request in #dial-requests", async () => {
      const ids = await page.locator("#dial-requests li").evaluateAll((els) => els.map((e) => e.dataset.request));
      return ids.find((i) => !known.has(i)) || null;
    }, 15000);
    const item = page.locator(`#dial-requests li[data-request="${id}"]`);
    const final = await until(`request ${id} answered or failed`, async () => {
      const s = await item.getAttribute("data-state");
      return s === "answered" || s === "failed" ? s : null;
    }, 45000);
    note(`click-to-call ${from} → +1 555 0100 via pbx (attempt ${attempt}): ${id} ${final}: ${(await item.innerText()).replace(/\s+/g, " ")}`);
    if (final === "answered") answered = id;
    else if ((await item.innerText()).includes(`extension ${from} was not reached`)) busyFrom.add(from);
  }
  if (!answered) throw new Error(`no click-to-call was answered in ${ATTEMPTS} attempts`);
  await page.waitForSelector(
    `#live-calls tr[data-request="${answered}"], #records tr[data-request="${answered}"]`,
    { timeout: 30000 },
  );
  const live = await page.locator(`#live-calls tr[data-request="${answered}"]`).count();
  note(`call with request ${answered} shown in ${live ? "live calls" : "records"}`);
  const status = await apiGet(`/api/v1/dial/${answered}`);
  if (status.state !== "answered") throw new Error(`GET /api/v1/dial/${answered}: ${status.state}`);
  await shot("03-click-to-call.png");

  // 5. The banner while the AMI link is down: /readyz as the bridge answers then.
  await page.route("**/readyz", (route) => route.fulfill({
    status: 503,
    contentType: "application/json",
    body: JSON.stringify({ ready: false, checks: {
      ami: { ok: false, detail: "0 of 1 PBX logged in" },
      store: { ok: true, detail: "ok" },
      journal: { ok: true, detail: "ok" },
    } }),
  }));
  await page.evaluate(() => checkHealth());
  const banner = await until("the AMI banner", async () => {
    const b = page.locator("#ami-banner");
    return (await b.isVisible()) ? await b.innerText() : null;
  }, 10000);
  if (!banner.includes("AMI link down")) throw new Error(`banner: ${banner}`);
  note(`banner while AMI is down: ${banner}`);
  await shot("04-ami-down.png");
  await page.unroute("**/readyz");
  await page.evaluate(() => checkHealth());
  await until("the banner gone with AMI back", async () => !(await page.locator("#ami-banner").isVisible()), 10000);

  if (pageErrors.length) throw new Error(`JavaScript errors on the page: ${pageErrors.join(" | ")}`);
  if (foreign.length) throw new Error(`the page fetched from elsewhere: ${foreign.join(", ")}`);
} catch (e) {
  failed = e;
  note(`FAILED: ${e.message}`);
  await shot("failure.png").catch(() => {});
} finally {
  fs.writeFileSync(path.join(artifacts, "console.log"), consoleLines.concat(pageErrors.map((e) => "pageerror: " + e)).join("\n") + "\n");
  fs.writeFileSync(path.join(artifacts, "summary.log"), log.join("\n") + "\n");
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
if (failed) process.exit(1);
note("all checks passed");
