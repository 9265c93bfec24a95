import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { PushgateClient, PushgateError, CloseCode } from '../dist/pushgate.js';
import { setup, fakeTimers, tick, flush, message, makeFakeSocketClass } from './fake.mjs';

beforeEach(fakeTimers);
afterEach(() => mock.timers.reset());

test('connect sends the token in the query and resolves with the welcome frame', async () => {
  const { client, sockets, events, last } = setup();
  assert.equal(client.state, 'idle');
  const p = client.connect();
  assert.equal(sockets.length, 1);
  assert.equal(client.state, 'connecting');
  assert.equal(last().url.pathname, '/ws');
  assert.equal(last().url.searchParams.get('token'), 'tok');
  assert.equal(last().url.searchParams.has('last_seq'), false, 'no cursor known on a first connect');
  last().welcome({ session: 'sess-1', last_seq: 0 });
  const welcome = await p;
  assert.equal(welcome.session, 'sess-1');
  assert.equal(client.state, 'open');
  assert.equal(client.session.session, 'sess-1');
  assert.deepEqual(events.state.map((s) => s.state), ['connecting', 'open']);
  assert.equal(events.connecting.length, 1);
  assert.equal(events.connecting[0].url.includes('tok'), false, 'the token is not exposed in events');
  assert.equal(events.open.length, 1);
  assert.equal(events.welcome.length, 1);
  // connect() while open resolves at once, without a second socket
  assert.equal((await client.connect()).session, 'sess-1');
  assert.equal(sockets.length, 1);
});

test('http(s) URLs are mapped to ws(s) and existing token/last_seq params are replaced', () => {
  const { client, last } = setup({ url: 'https://gw.example/ws?token=old&x=1', lastSeq: 9 });
  client.connect();
  assert.equal(last().url.protocol, 'wss:');
  assert.equal(last().url.searchParams.get('token'), 'tok');
  assert.equal(last().url.searchParams.get('x'), '1');
  assert.equal(last().url.searchParams.get('last_seq'), '9');
});

test('every server frame type is surfaced as a typed event', async () => {
  const { client, events, last } = setup();
  client.connect();
  last().welcome();
  last().push(message(1));
  last().push({ type: 'message', id: 'c1', ts: 1, data: 'hi', channel: 'news' });
  last().push({ type: 'subscribed', channel: 'news' });
  last().push({ type: 'unsubscribed', channel: 'news' });
  last().push({ type: 'pong' });
  last().push({ type: 'gap', dropped: 7, channel: 'news' });
  last().push({ type: 'error', code: 'rate_limited', message: 'slow down' });
  last().push({ type: 'reconnect', after_ms: 100 });
  last().push({ type: 'future_frame', x: 1 }); // additions to the contract are ignored
  assert.equal(events.welcome.length, 1);
  assert.deepEqual(events.message.map((m) => m.id), ['m1', 'c1']);
  assert.equal(events.message[1].channel, 'news');
  assert.equal(events.subscribed[0].channel, 'news');
  assert.equal(events.unsubscribed[0].channel, 'news');
  assert.equal(events.pong.length, 1);
  assert.deepEqual(events.gap, [{ type: 'gap', dropped: 7, channel: 'news' }]);
  assert.equal(events.error[0].code, 'rate_limited');
  assert.equal(events.reconnect[0].after_ms, 100);
  assert.equal(client.state, 'open', 'an error frame does not end the session');
  client.close();
});

test('gap frames are surfaced with their count and channel', () => {
  const { client, events, last } = setup();
  client.connect();
  last().welcome();
  last().push({ type: 'gap', dropped: 3 });
  last().push({ type: 'gap', dropped: 12, channel: 'room:1' });
  assert.deepEqual(
    events.gap.map((g) => [g.dropped, g.channel]),
    [[3, undefined], [12, 'room:1']],
  );
});

test('unparseable frames are reported as clientError and ignored', () => {
  const { client, events, last } = setup();
  client.connect();
  last().welcome();
  last().push('not json');
  last().push('{"no":"type"}');
  assert.equal(events.clientError.length, 2);
  assert.equal(events.clientError[0].context, 'frame');
  assert.equal(client.state, 'open');
});

test('close() closes the socket with 1000, stops reconnecting and emits close', async () => {
  const { client, sockets, events, last } = setup();
  client.connect();
  last().welcome();
  client.close();
  assert.deepEqual(last().closedByClient, { code: 1000, reason: 'client closed' });
  assert.equal(client.state, 'closed');
  const close = events.close.at(-1);
  assert.equal(close.code, 1000);
  assert.equal(close.willReconnect, false);
  tick(120_000);
  assert.equal(sockets.length, 1);
});

test('connect() rejects when the client is closed before a welcome arrives', async () => {
  const { client } = setup();
  const p = client.connect();
  client.close();
  await assert.rejects(p, (err) => err instanceof PushgateError && err.code === 'closed');
});

test('connect() rejects on a terminal close code before the welcome', async () => {
  const { client, last } = setup();
  const p = client.connect();
  last().accept();
  last().serverClose(CloseCode.POLICY, 'token expired');
  await assert.rejects(p, (err) => err.code === 'closed' && err.closeCode === 1008);
});

test('connect() after a terminal close starts again and keeps the resume cursor', async () => {
  const { client, sockets, last } = setup();
  client.connect();
  last().welcome();
  last().push(message(1));
  last().push(message(2));
  last().serverClose(CloseCode.ADMIN_DISCONNECT);
  assert.equal(client.state, 'closed');
  const p = client.connect();
  assert.equal(sockets.length, 2);
  assert.equal(last().url.searchParams.get('last_seq'), '2');
  last().welcome({ last_seq: 2 });
  await p;
  assert.equal(client.state, 'open');
});

test('getToken is called before every connection attempt (tokens get refreshed)', async () => {
  let calls = 0;
  const { client, sockets, last } = setup({ token: undefined, getToken: async () => 'jwt-' + ++calls });
  client.connect();
  await flush();
  assert.equal(last().url.searchParams.get('token'), 'jwt-1');
  last().welcome();
  last().serverClose(CloseCode.SLOW_CONSUMER);
  tick(60_000);
  await flush();
  assert.equal(sockets.length, 2);
  assert.equal(last().url.searchParams.get('token'), 'jwt-2');
  last().fail();
  tick(60_000);
  await flush();
  assert.equal(sockets.length, 3);
  assert.equal(last().url.searchParams.get('token'), 'jwt-3');
  assert.equal(calls, 3);
});

test('a failing getToken counts as a failed attempt and is retried with backoff', async () => {
  let calls = 0;
  const { client, sockets, events, last } = setup({
    token: undefined,
    getToken: () => {
      calls++;
      if (calls === 1) return Promise.reject(new Error('auth server down'));
      return 'fresh';
    },
  });
  const p = client.connect();
  await flush();
  assert.equal(sockets.length, 0);
  assert.equal(events.clientError[0].context, 'token');
  assert.equal(events.close[0].willReconnect, true);
  assert.equal(client.state, 'reconnecting');
  tick(events.close[0].delayMs);
  assert.equal(sockets.length, 1);
  assert.equal(last().url.searchParams.get('token'), 'fresh');
  last().welcome();
  await p;
});

test('works without any browser globals and reports a missing WebSocket implementation', () => {
  const client = new PushgateClient({ url: 'ws://x/ws', token: 't', reconnect: false });
  const errors = [];
  client.on('clientError', (e) => errors.push(e));
  const p = client.connect();
  p.catch(() => {});
  if (typeof globalThis.WebSocket === 'undefined') {
    assert.equal(errors[0].context, 'socket');
    assert.equal(client.state, 'closed');
  } else {
    client.close();
  }
});

test('throws on a missing url', () => {
  assert.throws(() => new PushgateClient({}), TypeError);
});

test('a listener calling close() during close does not resurrect the connection', () => {
  const { client, sockets, last } = setup();
  client.on('close', (e) => {
    if (e.willReconnect) client.close();
  });
  client.connect();
  last().welcome();
  last().serverClose(CloseCode.GOING_AWAY);
  assert.equal(client.state, 'closed');
  tick(120_000);
  assert.equal(sockets.length, 1);
});

test('frames from a replaced socket are ignored', () => {
  const { client, events, sockets } = setup();
  client.connect();
  const first = sockets[0];
  first.welcome();
  first.serverClose(CloseCode.RESTARTING);
  tick(5_000);
  const second = sockets[1];
  second.welcome();
  first.push(message(99)); // late frame on the old socket
  assert.equal(events.message.length, 0);
  assert.equal(client.state, 'open');
  void second;
});

test('a socket constructor fake can be any class with the WebSocket shape', () => {
  const { FakeSocket, sockets } = makeFakeSocketClass();
  const c = new PushgateClient({ url: 'ws://h/ws', token: 't', WebSocket: FakeSocket, window: null, document: null });
  c.connect();
  assert.equal(sockets.length, 1);
  c.close();
});
