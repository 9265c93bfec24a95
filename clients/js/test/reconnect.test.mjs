import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { CloseCode } from '../dist/pushgate.js';
import { setup, fakeTimers, tick, message } from './fake.mjs';

beforeEach(fakeTimers);
afterEach(() => mock.timers.reset());

/** Connect and receive a welcome on the newest socket. */
function up(ctx, fields) {
  if (ctx.client.state === 'idle' || ctx.client.state === 'closed') ctx.client.connect();
  ctx.last().welcome(fields);
}

for (const code of [CloseCode.ADMIN_DISCONNECT, CloseCode.POLICY]) {
  test(`no automatic reconnect after close code ${code}`, () => {
    const ctx = setup();
    up(ctx);
    ctx.last().serverClose(code, 'bye');
    assert.equal(ctx.client.state, 'closed');
    const close = ctx.events.close.at(-1);
    assert.equal(close.code, code);
    assert.equal(close.willReconnect, false);
    assert.equal(close.delayMs, undefined);
    tick(10 * 60_000);
    assert.equal(ctx.sockets.length, 1);
  });
}

for (const code of [1000, 1001, 1006, 1009, 1011, 4001, 4002, 4008]) {
  test(`close code ${code} reconnects with normal backoff`, () => {
    const ctx = setup({ backoffBaseMs: 1000, backoffMaxMs: 30_000 });
    ctx.rng.value = 0.5;
    up(ctx);
    ctx.last().serverClose(code);
    const close = ctx.events.close.at(-1);
    assert.equal(close.willReconnect, true);
    assert.equal(close.delayMs, 500, 'attempt 0: random 0.5 * base 1000');
    assert.equal(ctx.client.state, 'reconnecting');
    tick(499);
    assert.equal(ctx.sockets.length, 1);
    tick(1);
    assert.equal(ctx.sockets.length, 2);
    assert.equal(ctx.client.state, 'connecting');
  });
}

test('1012 (node restarting) reconnects quickly with a small random delay', () => {
  const ctx = setup({ quickReconnectMaxMs: 1000, backoffBaseMs: 5000 });
  ctx.rng.value = 0.25;
  up(ctx);
  // Fail a few times first: the quick path must not depend on the backoff attempt count.
  ctx.last().serverClose(4001);
  tick(60_000);
  ctx.last().fail();
  tick(60_000);
  ctx.last().welcome();
  ctx.last().serverClose(CloseCode.RESTARTING);
  const close = ctx.events.close.at(-1);
  assert.equal(close.delayMs, 250);
  const n = ctx.sockets.length;
  tick(249);
  assert.equal(ctx.sockets.length, n);
  tick(1);
  assert.equal(ctx.sockets.length, n + 1);
});

test('1012 delay stays within [0, quickReconnectMaxMs)', () => {
  for (const r of [0, 0.5, 0.999999]) {
    const ctx = setup({ quickReconnectMaxMs: 800 });
    ctx.rng.value = r;
    up(ctx);
    ctx.last().serverClose(CloseCode.RESTARTING);
    const d = ctx.events.close.at(-1).delayMs;
    assert.ok(d >= 0 && d < 800, `delay ${d} for random ${r}`);
  }
});

test('a reconnect frame is honoured: reconnect after after_ms, not earlier', () => {
  const ctx = setup({ quickReconnectMaxMs: 1000 });
  ctx.rng.value = 0.1; // would give 100 ms for a bare 1012
  up(ctx);
  ctx.last().push({ type: 'reconnect', after_ms: 3000 });
  assert.equal(ctx.events.reconnect[0].after_ms, 3000);
  tick(1000);
  ctx.last().serverClose(CloseCode.RESTARTING, 'draining'); // server closes 1 s later
  const close = ctx.events.close.at(-1);
  assert.equal(close.willReconnect, true);
  assert.equal(close.delayMs, 2000, 'the remaining part of after_ms');
  tick(1999);
  assert.equal(ctx.sockets.length, 1);
  tick(1);
  assert.equal(ctx.sockets.length, 2);
});

test('after a reconnect frame the client leaves by itself at after_ms if the server has not closed', () => {
  const ctx = setup({ ackBatchSize: 100 });
  up(ctx);
  ctx.last().push(message(1));
  ctx.last().push({ type: 'reconnect', after_ms: 500 });
  const old = ctx.last();
  assert.deepEqual(old.frames('ack'), [{ type: 'ack', seq: 1 }], 'pending ack flushed when draining starts');
  tick(499);
  assert.equal(old.closedByClient, null);
  tick(1);
  assert.ok(old.closedByClient, 'client closed the draining socket');
  assert.equal(ctx.sockets.length, 2, 'and reconnected right away');
  assert.equal(ctx.last().url.searchParams.get('last_seq'), '1');
});

test('backoff grows exponentially with full jitter and is capped', () => {
  const ctx = setup({ backoffBaseMs: 100, backoffMaxMs: 1000 });
  ctx.rng.value = 0.999;
  ctx.client.connect();
  const delays = [];
  for (let i = 0; i < 7; i++) {
    ctx.last().fail();
    const d = ctx.events.close.at(-1).delayMs;
    delays.push(d);
    tick(d);
  }
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999, 999]);
  assert.equal(ctx.sockets.length, 8);
  assert.deepEqual(
    ctx.events.connecting.map((c) => c.attempt),
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
});

test('full jitter: every backoff delay is within [0, min(max, base * 2^attempt))', () => {
  const ctx = setup({ backoffBaseMs: 200, backoffMaxMs: 5000 });
  let seed = 42;
  const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
  ctx.client.connect();
  for (let attempt = 0; attempt < 12; attempt++) {
    ctx.rng.value = random();
    ctx.last().fail();
    const d = ctx.events.close.at(-1).delayMs;
    const cap = Math.min(5000, 200 * 2 ** attempt);
    assert.ok(d >= 0 && d < cap, `attempt ${attempt}: ${d} not in [0, ${cap})`);
    assert.equal(d, Math.floor(ctx.rng.value * cap));
    tick(d);
  }
  ctx.rng.value = 0;
  ctx.last().fail();
  assert.equal(ctx.events.close.at(-1).delayMs, 0, 'full jitter can be zero');
});

test('1013 (overloaded) waits longer than the normal backoff', () => {
  const ctx = setup({ backoffBaseMs: 1000, overloadedDelayMs: 10_000 });
  ctx.rng.value = 0.5;
  up(ctx);
  ctx.last().serverClose(CloseCode.OVERLOADED);
  const d = ctx.events.close.at(-1).delayMs;
  assert.equal(d, 10_000 + 500);
  tick(10_499);
  assert.equal(ctx.sockets.length, 1);
  tick(1);
  assert.equal(ctx.sockets.length, 2);
  // compare with a normal close at the same attempt
  const ctx2 = setup({ backoffBaseMs: 1000, overloadedDelayMs: 10_000 });
  ctx2.rng.value = 0.5;
  up(ctx2);
  ctx2.last().serverClose(4001);
  assert.ok(ctx2.events.close.at(-1).delayMs < d);
});

test('backoff resets after a session stayed up for stableSessionMs', () => {
  const ctx = setup({ backoffBaseMs: 100, backoffMaxMs: 100_000, stableSessionMs: 10_000 });
  ctx.rng.value = 0.999;
  ctx.client.connect();
  for (let i = 0; i < 4; i++) {
    ctx.last().fail();
    tick(ctx.events.close.at(-1).delayMs);
  }
  assert.equal(ctx.events.close.at(-1).delayMs, 799);
  // short session: no reset, the backoff keeps growing
  ctx.last().welcome();
  tick(9_000);
  ctx.last().serverClose(4001);
  assert.equal(ctx.events.close.at(-1).delayMs, 1598); // floor(0.999 * 1600)
  tick(1598);
  // long session: reset
  ctx.last().welcome();
  tick(10_000);
  ctx.last().serverClose(4001);
  assert.equal(ctx.events.close.at(-1).delayMs, 99);
});

test('maxReconnectAttempts gives up and ends in closed', async () => {
  const ctx = setup({ maxReconnectAttempts: 2, backoffBaseMs: 10 });
  const p = ctx.client.connect();
  ctx.last().fail();
  tick(100);
  ctx.last().fail();
  tick(100);
  ctx.last().fail();
  assert.equal(ctx.client.state, 'closed');
  assert.equal(ctx.sockets.length, 3);
  assert.equal(ctx.events.close.at(-1).willReconnect, false);
  await assert.rejects(p, (e) => e.code === 'closed');
});

test('reconnect: false never reconnects', () => {
  const ctx = setup({ reconnect: false });
  up(ctx);
  ctx.last().serverClose(CloseCode.RESTARTING);
  assert.equal(ctx.client.state, 'closed');
  tick(60_000);
  assert.equal(ctx.sockets.length, 1);
});

test('state events follow connecting -> open -> reconnecting -> connecting -> open', () => {
  const ctx = setup();
  up(ctx);
  ctx.last().serverClose(4002);
  tick(60_000);
  ctx.last().welcome();
  assert.deepEqual(
    ctx.events.state.map((s) => s.state),
    ['connecting', 'open', 'reconnecting', 'connecting', 'open'],
  );
  assert.deepEqual(ctx.events.state[2], { state: 'reconnecting', previous: 'open' });
});
