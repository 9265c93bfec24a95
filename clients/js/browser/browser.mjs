// Headless Chromium (Debian's package, driven by playwright-core) and helpers for the demo page.
import { existsSync, mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { JS_DIR } from './gateway.mjs';

export const CHROMIUM = process.env.PUSHGATE_CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = join(JS_DIR, 'browser', 'artifacts');

/** How long a DOM condition may take before the test fails. */
export const WAIT_MS = 20_000;

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: run clients/js/browser/setup.sh (or set PUSHGATE_CHROMIUM)`);
  }
  // Playwright adds a fresh temporary --user-data-dir and --headless itself.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    timeout: 60_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Opens the demo page of `gateway` in a new page of `context`, connects as `user`/`device`
 * through the form, and waits for the session. Uncaught page errors are collected in
 * `page.pageErrors` (the tests assert there are none).
 */
export async function openDemo(context, gateway, { user, device, connect = true, query } = {}) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.pageErrors = [];
  page.on('pageerror', (err) => page.pageErrors.push(String(err && err.stack ? err.stack : err)));
  if (query) {
    // e.g. `user=bob&device=tab&connect=1`: the page fills the form (and connects) by itself
    await page.goto(`${gateway.url}/?${query}`);
    if (/(^|&)connect=1(&|$)/.test(query)) await waitOpen(page);
    return page;
  }
  await page.goto(`${gateway.url}/`);
  await page.locator('#state[data-state="idle"]').waitFor();
  if (user !== undefined) await page.fill('#user', user);
  if (device !== undefined) await page.fill('#device', device);
  if (connect) {
    await page.click('#connect');
    await waitOpen(page);
  }
  return page;
}

/** Waits until the page shows an open session; with `reconnects`, at least that many reconnects. */
export async function waitOpen(page, { reconnects = 0, timeout = WAIT_MS } = {}) {
  await page.waitForFunction(
    (min) =>
      document.getElementById('state').dataset.state === 'open' &&
      document.getElementById('session').textContent !== '–' &&
      Number(document.getElementById('reconnects').textContent) >= min,
    reconnects,
    { timeout },
  );
}

export async function state(page) {
  return page.locator('#state').getAttribute('data-state');
}

/** The messages shown on the page, in arrival order. */
export async function messages(page) {
  const rows = await page.$$eval('#messages [data-testid="message"]', (els) =>
    els.map((el) => ({
      n: Number(el.dataset.n),
      id: el.dataset.id,
      seq: el.dataset.seq === undefined ? undefined : Number(el.dataset.seq),
      channel: el.dataset.channel,
      text: el.textContent,
    })),
  );
  return rows.sort((a, b) => a.n - b.n);
}

/** Waits until the page shows a message with this id. */
export async function waitMessage(page, id, timeout = WAIT_MS) {
  const el = page.locator(`#messages [data-testid="message"][data-id="${id}"]`);
  await el.first().waitFor({ timeout });
  return el;
}

/** Waits until the page has received at least `count` durable messages (the highest seq shown). */
export async function waitSeq(page, seq, timeout = WAIT_MS) {
  await page.waitForFunction(
    (s) => {
      const top = document.querySelector('#messages [data-testid="message"][data-seq]');
      return top !== null && Number(top.dataset.seq) >= s;
    },
    seq,
    { timeout },
  );
}

export async function events(page, type) {
  return page.$$eval(
    `#events [data-testid="event"]${type ? `[data-type="${type}"]` : ''}`,
    (els) => els.map((el) => ({ type: el.dataset.type, text: el.textContent })).reverse(),
  );
}

/** Saves a screenshot (and the page's HTML) under artifacts/; returns the PNG's path. */
export async function saveArtifacts(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const png = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: png, fullPage: true });
  await writeFile(join(ARTIFACTS, `${name}.html`), await page.content());
  return png;
}

export async function saveText(name, text) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, name);
  await writeFile(path, text);
  return path;
}
