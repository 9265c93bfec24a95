import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { setup, fakeTimers, tick, flush, fakeWindow, fakeDocument, message } from './fake.mjs';

beforeEach(fakeTimers);
afterEach(() => mock.timers.reset());

function connected(options) {
  const ctx = setup(options);
  ctx.client.connect();
  ctx.last().welcome();
  return ctx;
}

test('online event: emits online, pings, and without any frame in pingTimeoutMs drops and reconnects', () => {
  const window = fakeWindow();
  const { client, last, sockets, events } = connected({ window, pingTimeoutMs: 3000 });
  const sock = last();
  window.fire('online');
  assert.equal(events.online.length, 1);
  const [ping] = sock.frames('ping');
  assert.equal(typeof ping.id, 'string');
  tick(2999);
  assert.equal(client.state, 'open');
  tick(1);
  assert.ok(sock.closedByClient, 'the dead socket is closed');
  const close = events.close.at(-1);
  assert.equal(close.code, 1006);
  assert.equal(close.reason, 'ping timeout');
  assert.equal(close.willReconnect, true);
  tick(close.delayMs);
  assert.equal(sockets.length, 2);
});

test('visibilitychange to visible pings; a pong keeps the connection', async () => {
  const document = fakeDocument('hidden');
  const { client, last, events } = connected({ document, pingTimeoutMs: 3000 });
  document.setVisibility('visible');
  const [ping] = last().frames('ping');
  assert.ok(ping);
  tick(100);
  last().push({ type: 'pong', id: ping.id });
  assert.equal(events.pong.length, 1);
  tick(10_000);
  assert.equal(client.state, 'open');
  assert.equal(events.close.length, 0);
});

test('any frame within the timeout proves liveness', () => {
  const window = fakeWindow();
  const { client, last } = connected({ window, pingTimeoutMs: 1000 });
  window.fire('online');
  tick(500);
  last().push(message(1));
  tick(5000);
  assert.equal(client.state, 'open');
});

test('ping() resolves with the round-trip time', async () => {
  const { client, last } = connected();
  const p = client.ping();
  tick(42);
  last().push({ type: 'pong', id: last().frames('ping')[0].id });
  assert.equal(await p, 42);
});

test('ping() rejects when not connected', async () => {
  const { client } = setup();
  await assert.rejects(client.ping(), (e) => e.code === 'not_connected');
});

test('hidden tab flushes the pending ack', () => {
  const document = fakeDocument('visible');
  const { last } = connected({ document, ackBatchSize: 100, ackIntervalMs: 60_000 });
  last().push(message(1));
  document.setVisibility('hidden');
  assert.deepEqual(last().frames('ack'), [{ type: 'ack', seq: 1 }]);
});

test('offline is surfaced; a reconnect due while offline waits for the online event', () => {
  const window = fakeWindow(true);
  const { client, last, sockets, events } = connected({ window, backoffBaseMs: 1000 });
  window.navigator.onLine = false;
  window.fire('offline');
  assert.equal(events.offline.length, 1);
  last().serverClose(1006);
  tick(60_000);
  assert.equal(sockets.length, 1, 'no attempt while the browser says offline');
  assert.equal(client.state, 'reconnecting');
  window.navigator.onLine = true;
  window.fire('online');
  assert.equal(sockets.length, 2, 'network back: connect at once');
});

test('online during a network backoff reconnects at once', () => {
  const window = fakeWindow(true);
  const { last, sockets } = connected({ window, backoffBaseMs: 30_000 });
  last().serverClose(1006);
  assert.equal(sockets.length, 1);
  window.fire('online');
  assert.equal(sockets.length, 2);
});

test('online does not cut short a 1013 overload delay', () => {
  const window = fakeWindow(true);
  const { last, sockets } = connected({ window });
  last().serverClose(1013);
  window.fire('online');
  assert.equal(sockets.length, 1);
});

test('browser listeners are removed after close()', () => {
  const window = fakeWindow(true);
  const document = fakeDocument('visible');
  const { client, events } = connected({ window, document });
  client.close();
  window.fire('online');
  document.setVisibility('visible');
  assert.equal(events.online.length, 0);
});

test('a getToken that resolves after close() does not open a socket', async () => {
  let release;
  const { client, sockets } = setup({ token: undefined, getToken: () => new Promise((r) => (release = r)) });
  client.connect();
  client.close();
  release('late');
  await flush();
  assert.equal(sockets.length, 0);
});
