import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { setup, fakeTimers, tick, message } from './fake.mjs';

beforeEach(fakeTimers);
afterEach(() => mock.timers.reset());

function connected(options) {
  const ctx = setup(options);
  ctx.client.connect();
  ctx.last().welcome({ last_seq: 0 });
  return ctx;
}

test('acks are batched by count: one cumulative ack per ackBatchSize messages', () => {
  const { last } = connected({ ackBatchSize: 3, ackIntervalMs: 1000 });
  last().push(message(1));
  last().push(message(2));
  assert.deepEqual(last().frames('ack'), []);
  last().push(message(3));
  assert.deepEqual(last().frames('ack'), [{ type: 'ack', seq: 3 }]);
  for (const s of [4, 5, 6]) last().push(message(s));
  assert.deepEqual(last().frames('ack'), [{ type: 'ack', seq: 3 }, { type: 'ack', seq: 6 }]);
});

test('acks are batched by time: ackIntervalMs after the first unacked message', () => {
  const { last, client } = connected({ ackBatchSize: 100, ackIntervalMs: 1000 });
  last().push(message(1));
  tick(600);
  last().push(message(2)); // does not restart the timer
  tick(399);
  assert.deepEqual(last().frames('ack'), []);
  tick(1);
  assert.deepEqual(last().frames('ack'), [{ type: 'ack', seq: 2 }]);
  assert.equal(client.ackedSeq, 2);
  tick(10_000);
  assert.equal(last().frames('ack').length, 1, 'nothing new, nothing sent');
});

test('channel messages (no seq) are never acked', () => {
  const { last } = connected({ ackBatchSize: 1 });
  last().push({ type: 'message', id: 'x', ts: 1, data: 1, channel: 'news' });
  tick(5000);
  assert.deepEqual(last().frames('ack'), []);
});

test('autoAck: false sends nothing until ack() is called; ack() defaults to the highest seq', () => {
  const { client, last, events } = connected({ autoAck: false, ackBatchSize: 100, ackIntervalMs: 500 });
  for (const s of [1, 2, 3, 4]) last().push(message(s));
  assert.equal(events.message.length, 4);
  tick(5000);
  assert.deepEqual(last().frames('ack'), []);
  client.ack(2);
  tick(500);
  assert.deepEqual(last().frames('ack'), [{ type: 'ack', seq: 2 }]);
  client.ack();
  assert.equal(client.flushAck(), true);
  assert.deepEqual(last().frames('ack').at(-1), { type: 'ack', seq: 4 });
  client.ack(99); // above anything received: clamped, never sends a bad_frame ack
  client.flushAck();
  assert.equal(last().frames('ack').length, 2);
  client.ack(1); // below the cursor: ignored
  assert.equal(client.flushAck(), false);
});

test('manual ack counts towards the batch size by seq distance', () => {
  const { client, last } = connected({ autoAck: false, ackBatchSize: 3, ackIntervalMs: 10_000 });
  for (const s of [1, 2, 3]) last().push(message(s));
  client.ack(3);
  assert.deepEqual(last().frames('ack'), [{ type: 'ack', seq: 3 }]);
});

test('close() flushes the pending ack before closing the socket', () => {
  const { client, last } = connected({ ackBatchSize: 100, ackIntervalMs: 60_000 });
  last().push(message(1));
  last().push(message(2));
  const sock = last();
  client.close();
  assert.deepEqual(sock.frames('ack'), [{ type: 'ack', seq: 2 }]);
  assert.ok(sock.closedByClient);
});

test('an ack pending when the connection drops is sent after the next welcome', () => {
  const { last } = connected({ ackBatchSize: 100, ackIntervalMs: 60_000 });
  last().push(message(1));
  last().push(message(2));
  last().serverClose(4001);
  tick(60_000);
  assert.equal(last().url.searchParams.get('last_seq'), '2');
  last().welcome({ last_seq: 2 });
  assert.deepEqual(last().frames('ack'), [{ type: 'ack', seq: 2 }]);
});

test('resume: the highest seq received is passed as last_seq on reconnect', () => {
  const { last, sockets, client } = connected();
  for (const s of [1, 2, 3]) last().push(message(s));
  assert.equal(client.lastSeq, 3);
  last().serverClose(4002);
  tick(60_000);
  assert.equal(sockets.length, 2);
  assert.equal(last().url.searchParams.get('last_seq'), '3');
  last().welcome({ last_seq: 3 });
  last().push(message(4));
  last().serverClose(1006);
  tick(60_000);
  assert.equal(last().url.searchParams.get('last_seq'), '4');
});

test('resume: the server cursor from welcome is adopted when no last_seq was sent', () => {
  const { client, last, sockets } = setup({ ackBatchSize: 1 });
  client.connect();
  assert.equal(last().url.searchParams.has('last_seq'), false);
  last().welcome({ last_seq: 40 }); // what this device acked before
  assert.equal(client.lastSeq, 40);
  assert.equal(client.ackedSeq, 40);
  assert.deepEqual(last().frames('ack'), [], 'the server already has this cursor');
  last().push(message(41));
  assert.deepEqual(last().frames('ack'), [{ type: 'ack', seq: 41 }]);
  last().serverClose(4001);
  tick(60_000);
  assert.equal(sockets.length, 2);
  assert.equal(last().url.searchParams.get('last_seq'), '41');
});

test('resume: options.lastSeq seeds the first connection', () => {
  const { client, last } = setup({ lastSeq: 17 });
  client.connect();
  assert.equal(last().url.searchParams.get('last_seq'), '17');
});

test('duplicate seqs (<= highest seen) are dropped', () => {
  const { client, last, events } = connected({ ackBatchSize: 1 });
  last().push(message(1));
  last().push(message(2));
  last().push(message(2));
  last().push(message(1));
  last().push(message(3));
  assert.deepEqual(events.message.map((m) => m.seq), [1, 2, 3]);
  assert.equal(client.duplicatesDropped, 2);
  assert.deepEqual(last().frames('ack').map((a) => a.seq), [1, 2, 3]);
});

test('replayed seqs at or below the resume cursor are dropped after a reconnect', () => {
  const { last, events } = connected();
  for (const s of [1, 2, 3]) last().push(message(s));
  last().serverClose(4001);
  tick(60_000);
  // A server that ignores last_seq and replays from an older cursor.
  last().welcome({ last_seq: 1 });
  for (const s of [2, 3, 4]) last().push(message(s));
  assert.deepEqual(events.message.map((m) => m.seq), [1, 2, 3, 4]);
});
