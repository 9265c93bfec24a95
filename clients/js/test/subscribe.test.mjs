import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { PushgateError } from '../dist/pushgate.js';
import { setup, fakeTimers, tick, flush } from './fake.mjs';

beforeEach(fakeTimers);
afterEach(() => mock.timers.reset());

function connected(options) {
  const ctx = setup(options);
  ctx.client.connect();
  ctx.last().welcome();
  return ctx;
}

test('subscribe resolves on the subscribed frame matched by id', async () => {
  const { client, last, events } = connected();
  let done = false;
  const p = client.subscribe('news').then(() => (done = true));
  const [frame] = last().frames('subscribe');
  assert.equal(frame.channel, 'news');
  assert.equal(typeof frame.id, 'string');
  assert.ok(frame.id.length <= 64);
  assert.equal(frame.token, undefined);
  await flush();
  assert.equal(done, false);
  last().push({ type: 'subscribed', channel: 'news', id: frame.id });
  await p;
  assert.equal(done, true);
  assert.equal(client.isSubscribed('news'), true);
  assert.equal(events.subscribed.length, 1);
  await client.subscribe('news'); // already subscribed: resolves without a new frame
  assert.equal(last().frames('subscribe').length, 1);
});

test('subscribe rejects on the error frame matched by id and forgets the channel', async () => {
  const { client, last, events } = connected();
  const ok = client.subscribe('a');
  const bad = client.subscribe('b');
  const [fa, fb] = last().frames('subscribe');
  last().push({ type: 'error', code: 'forbidden', message: 'not allowed', id: fb.id });
  last().push({ type: 'subscribed', channel: 'a', id: fa.id });
  await ok;
  await assert.rejects(bad, (err) => err instanceof PushgateError && err.code === 'forbidden' && err.frame.id === fb.id);
  assert.equal(events.error.length, 1, 'the error frame is also an event');
  assert.deepEqual(client.channels, ['a']);
  // not re-sent after a reconnect
  last().serverClose(4001);
  tick(60_000);
  last().welcome();
  assert.deepEqual(last().frames('subscribe').map((f) => f.channel), ['a']);
});

test('an error frame for another id does not reject an unrelated subscribe', async () => {
  const { client, last, events } = connected();
  let settled = false;
  client.subscribe('x').then(() => (settled = true), () => (settled = true));
  last().push({ type: 'error', code: 'bad_frame', message: 'nope', id: 'someone-else' });
  last().push({ type: 'error', code: 'rate_limited', message: 'slow' });
  await flush();
  assert.equal(settled, false);
  assert.equal(events.error.length, 2);
});

test('subscriptions survive reconnects: re-subscribe after every welcome, with fresh ids and tokens', async () => {
  let n = 0;
  const { client, last, sockets } = setup({ getChannelToken: (ch) => `${ch}-jwt-${++n}` });
  const p = client.subscribe('room:1'); // before connect: queued until the welcome
  client.connect();
  assert.deepEqual(last().sent, [], 'nothing is sent before the welcome');
  last().welcome();
  const f1 = last().frames('subscribe')[0];
  assert.deepEqual([f1.channel, f1.token], ['room:1', 'room:1-jwt-1']);
  last().push({ type: 'subscribed', channel: 'room:1', id: f1.id });
  await p;
  last().serverClose(1012);
  tick(5_000);
  assert.equal(sockets.length, 2);
  assert.equal(client.isSubscribed('room:1'), false);
  last().welcome();
  const f2 = last().frames('subscribe')[0];
  assert.deepEqual([f2.channel, f2.token], ['room:1', 'room:1-jwt-2']);
  assert.notEqual(f2.id, f1.id);
  last().push({ type: 'subscribed', channel: 'room:1', id: f2.id });
  assert.equal(client.isSubscribed('room:1'), true);
});

test('a per-subscription async token callback is awaited on every (re)subscribe', async () => {
  const calls = [];
  const { client, last } = connected();
  const p = client.subscribe('vip', {
    getToken: async (ch) => {
      calls.push(ch);
      return 'vip-token-' + calls.length;
    },
  });
  assert.deepEqual(last().frames('subscribe'), []);
  await flush();
  const f = last().frames('subscribe')[0];
  assert.equal(f.token, 'vip-token-1');
  last().push({ type: 'subscribed', channel: 'vip', id: f.id });
  await p;
  last().serverClose(4001);
  tick(60_000);
  last().welcome();
  await flush();
  assert.equal(last().frames('subscribe')[0].token, 'vip-token-2');
  assert.deepEqual(calls, ['vip', 'vip']);
});

test('a static channel token is sent with the subscribe', () => {
  const { client, last } = connected();
  client.subscribe('c', { token: 'static' });
  assert.equal(last().frames('subscribe')[0].token, 'static');
});

test('a failing channel token callback rejects the subscribe and reports clientError', async () => {
  const { client, events, last } = connected();
  const p = client.subscribe('c', { getToken: () => Promise.reject(new Error('no token')) });
  await assert.rejects(p, /no token/);
  assert.equal(events.clientError[0].context, 'subscribe');
  assert.equal(events.clientError[0].channel, 'c');
  assert.deepEqual(last().frames('subscribe'), []);
  assert.deepEqual(client.channels, []);
});

test('subscribe times out after requestTimeoutMs without a reply', async () => {
  const { client, last } = connected({ requestTimeoutMs: 2000 });
  const p = client.subscribe('slow');
  tick(2000);
  await assert.rejects(p, (e) => e.code === 'timeout');
  assert.deepEqual(client.channels, []);
  assert.deepEqual(last().frames('unsubscribe').map((f) => f.channel), ['slow']);
});

test('a pending subscribe waits across a reconnect and resolves on the new session', async () => {
  const { client, last } = connected();
  let done = false;
  const p = client.subscribe('n').then(() => (done = true));
  last().serverClose(1006);
  await flush();
  assert.equal(done, false);
  tick(60_000);
  last().welcome();
  const f = last().frames('subscribe')[0];
  last().push({ type: 'subscribed', channel: 'n', id: f.id });
  await p;
  assert.equal(done, true);
});

test('unsubscribe resolves on the unsubscribed frame by id and the channel is not restored', async () => {
  const { client, last } = connected();
  const sp = client.subscribe('news');
  last().push({ type: 'subscribed', channel: 'news', id: last().frames('subscribe')[0].id });
  await sp;
  const up = client.unsubscribe('news');
  const [uf] = last().frames('unsubscribe');
  assert.equal(uf.channel, 'news');
  last().push({ type: 'unsubscribed', channel: 'news', id: uf.id });
  await up;
  assert.deepEqual(client.channels, []);
  last().serverClose(4001);
  tick(60_000);
  last().welcome();
  assert.deepEqual(last().frames('subscribe'), []);
});

test('unsubscribe before confirmation rejects the pending subscribe', async () => {
  const { client } = connected();
  const sp = client.subscribe('news');
  client.unsubscribe('news');
  await assert.rejects(sp, (e) => e.code === 'unsubscribed');
});

test('unsubscribe rejects on a matching error frame', async () => {
  const { client, last } = connected();
  client.subscribe('z');
  last().push({ type: 'subscribed', channel: 'z', id: last().frames('subscribe')[0].id });
  const up = client.unsubscribe('z');
  last().push({ type: 'error', code: 'invalid_channel', message: 'bad', id: last().frames('unsubscribe')[0].id });
  await assert.rejects(up, (e) => e.code === 'invalid_channel');
});

test('close() rejects pending subscribes but keeps the channels for the next connect()', async () => {
  const { client, last } = connected();
  const p = client.subscribe('keep');
  client.close();
  await assert.rejects(p, (e) => e.code === 'closed');
  assert.deepEqual(client.channels, ['keep']);
  client.connect();
  last().welcome();
  assert.deepEqual(last().frames('subscribe').map((f) => f.channel), ['keep']);
});

test('subscribe called from a welcome listener is sent once', () => {
  const { client, last } = setup();
  client.on('welcome', () => client.subscribe('w'));
  client.connect();
  last().welcome();
  assert.equal(last().frames('subscribe').length, 1);
});
