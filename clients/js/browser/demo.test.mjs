// Browser tests: the demo page (demo/index.html, served by the gateway with the SDK from dist/)
// in headless Chromium against a real pushgate-gateway process per test.
//
//   npm run test:browser            (after clients/js/browser/setup.sh and a release build)
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  events, launchBrowser, messages, openDemo, saveArtifacts, saveText, state, waitMessage, waitOpen,
} from './browser.mjs';
import { Gateway, JS_DIR, Publisher } from './gateway.mjs';

const TEST_TIMEOUT_MS = 120_000;
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * Runs `fn` with a fresh gateway and a fresh browser context; on failure saves a screenshot of
 * every open page and the gateway's log under artifacts/.
 */
async function withGateway(t, gatewayOpts, fn) {
  const gateway = await Gateway.start(gatewayOpts);
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  let ok = false;
  try {
    await fn({ gateway, context });
    for (const page of context.pages()) assert.deepEqual(page.pageErrors ?? [], [], 'uncaught errors in the page');
    ok = true;
  } finally {
    if (process.env.PUSHGATE_KEEP_LOGS) {
      t.diagnostic(`gateway log: ${await saveText(`${slug(t)}-gateway.log`, gateway.log)}`);
    }
    if (!ok) {
      const saved = [];
      for (const [i, page] of context.pages().entries()) {
        saved.push(await saveArtifacts(page, `failure-${slug(t)}-${i}`).catch((e) => `(screenshot failed: ${e.message})`));
      }
      saved.push(await saveText(`failure-${slug(t)}-gateway.log`, gateway.log));
      t.diagnostic(`failure artifacts: ${saved.join(' ')}`);
    }
    await context.close();
    await gateway.dispose();
  }
}

const slug = (t) => t.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase().slice(0, 60).replace(/-$/, '');

/** Durable messages on the page: each accepted id exactly once, in publish order, seq 1, 2, 3, ... */
function assertExactlyOnceInOrder(rows, accepted) {
  const durable = rows.filter((r) => r.seq !== undefined);
  const ids = durable.map((r) => r.id);
  const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
  assert.deepEqual(dupes, [], 'messages shown more than once');
  const missing = accepted.map((a) => a.id).filter((id) => !ids.includes(id));
  assert.deepEqual(missing, [], 'accepted messages never shown');
  assert.deepEqual(ids, accepted.map((a) => a.id), 'messages out of publish order');
  assert.deepEqual(durable.map((r) => r.seq), accepted.map((_, i) => i + 1), 'seq not 1, 2, 3, ...');
}

test('the gateway serves the current demo page and SDK', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  await withGateway(t, {}, async ({ gateway }) => {
    const stale = 'is stale: rebuild the gateway (`cargo build --release -p pushgate-gateway`), it embeds this file';
    for (const [path, file] of [['/', 'demo/index.html'], ['/pushgate.js', 'dist/pushgate.js']]) {
      const served = await (await fetch(gateway.url + path)).text();
      assert.ok(served === (await readFile(join(JS_DIR, file), 'utf8')), `GET ${path}: the binary's copy of ${file} ${stale}`);
    }
  });
});

test('the page connects and shows its session', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  await withGateway(t, {}, async ({ gateway, context }) => {
    const page = await openDemo(context, gateway, { user: 'alice', device: 'laptop' });
    assert.equal(await page.textContent('#state'), 'open');
    assert.equal(await page.textContent('#node'), gateway.node);
    assert.equal(await page.textContent('#who'), 'alice / laptop');
    assert.equal(await page.textContent('#reconnects'), '0');
    const session = await page.textContent('#session');
    const welcome = (await events(page, 'welcome')).at(-1);
    assert.match(welcome.text, new RegExp(`session ${session} on ${gateway.node}`));
    // The gateway agrees: that session is alice's, from device laptop.
    const presence = await gateway.presence('alice');
    assert.equal(presence.online, true);
    assert.deepEqual(presence.sessions.map((s) => [s.session, s.device]), [[session, 'laptop']]);

    // Disconnect: closed for good (no reconnect); Connect again: a new session.
    await page.click('#disconnect');
    await page.locator('#state[data-state="closed"]').waitFor();
    assert.match((await events(page, 'close')).at(-1).text, /1000.*not reconnecting/);
    await page.click('#connect');
    await waitOpen(page);
    assert.notEqual(await page.textContent('#session'), session);
    assert.equal(await page.textContent('#reconnects'), '0');
  });
});

test('a message published over the admin API appears on the page', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  await withGateway(t, {}, async ({ gateway, context }) => {
    const page = await openDemo(context, gateway, { user: 'alice' });
    const r = await gateway.publish({ id: 'hello-1', to: { users: ['alice'] }, data: { text: 'hello from the admin API' } });
    assert.equal(r.status, 202);
    assert.deepEqual(r.body, { id: 'hello-1' });
    const row = await waitMessage(page, 'hello-1');
    assert.equal(await row.getAttribute('data-seq'), '1');
    assert.match(await row.textContent(), /#1 \{"text":"hello from the admin API"\}/);
    assert.equal(await page.textContent('#received'), '1');
    // The same id again is a duplicate: accepted, not shown twice.
    const again = await gateway.publish({ id: 'hello-1', to: { users: ['alice'] }, data: { text: 'again' } });
    assert.deepEqual([again.status, again.body.duplicate], [202, true]);
    await gateway.publish({ id: 'hello-2', to: { users: ['alice'] }, data: 'second' });
    await waitMessage(page, 'hello-2');
    assert.deepEqual((await messages(page)).map((m) => [m.id, m.seq]), [['hello-1', 1], ['hello-2', 2]]);
  });
});

test('the demo controls: subscribe, publish to a user, a channel and everyone, unsubscribe, errors', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  await withGateway(t, {}, async ({ gateway, context }) => {
    const page = await openDemo(context, gateway, { user: 'bob', device: 'desk' });

    await page.fill('#channel', 'news');
    await page.click('#subscribe');
    await page.locator('#channels li[data-channel="news"][data-confirmed="true"]').waitFor();
    assert.equal((await gateway.publish({ id: 'news-1', to: { channel: 'news' }, data: { headline: 'from the admin API' } })).status, 202);
    const news = await waitMessage(page, 'news-1');
    assert.equal(await news.getAttribute('data-channel'), 'news');
    assert.equal(await news.getAttribute('data-seq'), null);

    const publishFromForm = async (target, to, data) => {
      await page.selectOption('#target', target);
      if (target !== 'all') await page.fill('#to', to);
      await page.fill('#data', data);
      await page.evaluate(() => delete document.getElementById('publish-result').dataset.status);
      await page.click('#publish');
      await page.locator('#publish-result[data-status]').waitFor();
      assert.equal(await page.getAttribute('#publish-result', 'data-status'), '202', await page.textContent('#publish-result'));
      return (await page.textContent('#publish-result')).match(/accepted (\S+)/)[1];
    };
    // To a user ("to" empty: the connected user), JSON data.
    const toMe = await publishFromForm('user', '', '{"note":"to myself"}');
    assert.equal(await (await waitMessage(page, toMe)).getAttribute('data-seq'), '1');
    // To the channel, plain text.
    const toChannel = await publishFromForm('channel', 'news', 'breaking: plain text');
    const channelRow = await waitMessage(page, toChannel);
    assert.equal(await channelRow.getAttribute('data-channel'), 'news');
    assert.match(await channelRow.textContent(), /"breaking: plain text"/);
    // To everyone.
    const toAll = await publishFromForm('all', '', '{"maintenance":"22:00"}');
    const allRow = await waitMessage(page, toAll);
    assert.equal(await allRow.getAttribute('data-channel'), null);
    assert.equal(await allRow.getAttribute('data-seq'), null);

    // A refused subscribe shows up as an error event and is not kept.
    await page.fill('#channel', 'not a channel!');
    await page.click('#subscribe');
    await page.locator('#events [data-type="error"]').first().waitFor();
    assert.match((await events(page, 'error')).at(-1).text, /invalid_channel/);
    assert.equal(await page.locator('#channels li[data-channel="not a channel!"]').count(), 0);

    // The screenshot artifact, taken while the page shows one of everything.
    const png = await saveArtifacts(page, 'demo');
    t.diagnostic(`screenshot: ${png}`);
    console.log(`demo page screenshot: ${png}`);

    // Unsubscribed: a later channel message is not delivered (a broadcast published after it is).
    await page.fill('#channel', 'news');
    await page.click('#unsubscribe');
    await page.locator('#channels li[data-channel="news"]').waitFor({ state: 'detached' });
    await gateway.publish({ id: 'news-2', to: { channel: 'news' }, data: 'not for bob' });
    await gateway.publish({ id: 'marker', to: { all: true }, data: 'after news-2' });
    await waitMessage(page, 'marker');
    assert.equal(await page.locator('#messages [data-id="news-2"]').count(), 0);
  });
});

test('two tabs of one user (two devices) both receive a user message', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  await withGateway(t, {}, async ({ gateway, context }) => {
    const tabA = await openDemo(context, gateway, { user: 'dave', device: 'tab-a' });
    const tabB = await openDemo(context, gateway, { query: 'user=dave&device=tab-b&connect=1' }); // connects from the URL
    assert.equal(await tabB.textContent('#who'), 'dave / tab-b');
    const presence = await gateway.presence('dave');
    assert.deepEqual(presence.sessions.map((s) => s.device).sort(), ['tab-a', 'tab-b']);
    assert.notEqual(await tabA.textContent('#session'), await tabB.textContent('#session'));

    assert.equal((await gateway.publish({ id: 'both-1', to: { users: ['dave'] }, data: 'to every device' })).status, 202);
    for (const tab of [tabA, tabB]) assert.equal(await (await waitMessage(tab, 'both-1')).getAttribute('data-seq'), '1');

    // Published from tab A's form: tab B gets it too.
    await tabA.selectOption('#target', 'user');
    await tabA.fill('#data', 'from tab a');
    await tabA.click('#publish');
    await tabA.locator('#publish-result[data-status="202"]').waitFor();
    const id = (await tabA.textContent('#publish-result')).match(/accepted (\S+)/)[1];
    for (const tab of [tabA, tabB]) {
      assert.equal(await (await waitMessage(tab, id)).getAttribute('data-seq'), '2');
      assert.deepEqual((await messages(tab)).map((m) => m.seq), [1, 2]);
    }
  });
});

test('after the gateway is killed and restarted, the page resumes: every message once, in order', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  await withGateway(t, {}, async ({ gateway, context }) => {
    const page = await openDemo(context, gateway, { user: 'carol', device: 'laptop' });
    const firstSession = await page.textContent('#session');
    const pub = new Publisher(gateway, 'carol', { prefix: 'kill' });
    let accepted;
    try {
      await pub.waitFor(15);
      await waitMessage(page, pub.accepted[9].id); // live delivery works

      // Hold the page's token requests: until they are released it cannot reconnect, so the
      // messages accepted meanwhile are accepted while it is certainly disconnected.
      const held = [];
      let released = false;
      const isToken = (url) => url.pathname === '/dev/token';
      await page.route(isToken, (route) => (released ? route.continue() : held.push(route)));
      await gateway.stop('SIGKILL'); // while the publisher is publishing
      await page.waitForFunction(() => document.getElementById('state').dataset.state !== 'open');
      const seenBefore = (await messages(page)).length;
      await gateway.start(); // same ports, same data dir
      t.diagnostic(`restarted: client ${gateway.client}, node ${gateway.node}; the page had ${seenBefore} messages`);

      const offlineFrom = pub.count;
      await pub.waitFor(offlineFrom + 15);
      assert.notEqual(await state(page), 'open', 'the page reconnected while its token requests were held');

      released = true;
      for (const route of held.splice(0)) await route.continue();
      await page.unroute(isToken);
      await waitOpen(page, { reconnects: 1 });
      assert.notEqual(await page.textContent('#session'), firstSession);
      assert.equal(await page.textContent('#resumed'), String(seenBefore), 'welcome.last_seq is the last seq the page had');
      await pub.waitFor(pub.count + 15); // and live again
    } finally {
      accepted = await pub.stop();
    }
    t.diagnostic(`${accepted.length} messages accepted, ${pub.retries} publish retries, ${accepted.filter((a) => a.duplicate).length} retried as duplicates`);
    t.diagnostic(`page events: ${(await events(page)).map((e) => e.text.replace(/^\S+ /, '')).join(' | ')}`);
    await waitMessage(page, accepted.at(-1).id);
    assertExactlyOnceInOrder(await messages(page), accepted);
    assert.equal(await page.evaluate(() => window.demo.client.duplicatesDropped), 0, 'the gateway resent a seq the page had');
  });
});

test('after a drain (SIGTERM) and a restart, the page reconnects by itself: every message once, in order', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const args = ['--set', 'drain_window=1s', '--set', 'reconnect_jitter=200ms'];
  await withGateway(t, { args }, async ({ gateway, context }) => {
    const page = await openDemo(context, gateway, { user: 'erin', device: 'phone' });
    const pub = new Publisher(gateway, 'erin', { prefix: 'drain' });
    let accepted;
    try {
      await pub.waitFor(15);
      await waitMessage(page, pub.accepted[9].id);
      await gateway.stop('SIGTERM'); // drains: `reconnect`, then 1012, then the process exits
      await page.locator('#events [data-type="reconnect"]').first().waitFor();
      assert.ok((await events(page, 'close')).some((e) => / 1012/.test(e.text)), 'closed with 1012');
      await gateway.start();
      await waitOpen(page, { reconnects: 1, timeout: 45_000 });
      await pub.waitFor(pub.count + 15);
    } finally {
      accepted = await pub.stop();
    }
    t.diagnostic(`${accepted.length} messages accepted, ${pub.retries} publish retries`);
    t.diagnostic(`page events: ${(await events(page)).map((e) => e.text.replace(/^\S+ /, '')).join(' | ')}`);
    await waitMessage(page, accepted.at(-1).id);
    assertExactlyOnceInOrder(await messages(page), accepted);
    assert.equal(await page.evaluate(() => window.demo.client.duplicatesDropped), 0, 'the gateway resent a seq the page had');
  });
});
