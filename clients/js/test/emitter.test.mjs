import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TypedEmitter } from '../dist/pushgate.js';
import { setup } from './fake.mjs';

class E extends TypedEmitter {
  fire(name, payload) {
    this.emit(name, payload);
  }
}

test('on/off/once and listenerCount', () => {
  const e = new E();
  const seen = [];
  const off = e.on('a', (x) => seen.push('on' + x));
  e.once('a', (x) => seen.push('once' + x));
  assert.equal(e.listenerCount('a'), 2);
  e.fire('a', 1);
  e.fire('a', 2);
  off();
  e.fire('a', 3);
  assert.deepEqual(seen, ['on1', 'once1', 'on2']);
  assert.equal(e.listenerCount('a'), 0);
  const f = () => seen.push('f');
  e.on('b', f);
  e.off('b', f);
  e.on('b', f);
  e.off('b');
  e.fire('b');
  assert.equal(seen.length, 3);
});

test('a throwing listener does not stop the others and is reported as clientError', () => {
  const { client, last, events } = setup();
  const got = [];
  client.on('welcome', () => {
    throw new Error('boom');
  });
  client.on('welcome', (w) => got.push(w.session));
  client.connect();
  last().welcome({ session: 'x' });
  assert.deepEqual(got, ['x']);
  assert.equal(client.state, 'open');
  assert.equal(events.clientError[0].context, 'listener');
  assert.equal(events.clientError[0].error.message, 'boom');
});
