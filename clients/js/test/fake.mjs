// Test helpers: a fake WebSocket that records client frames and lets a test play the server,
// plus a factory that wires a PushgateClient to it. Timers are faked with node:test mock.timers.
import { mock } from 'node:test';
import { PushgateClient } from '../dist/pushgate.js';

export const T0 = 1_700_000_000_000;

/** Enable fake setTimeout + Date (call in beforeEach); mock.timers.reset() in afterEach. */
export function fakeTimers() {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
}

/** Advance fake time. */
export function tick(ms) {
  mock.timers.tick(ms);
}

/** Let pending promise callbacks (token callbacks, resolved requests) run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

export function makeFakeSocketClass() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = new URL(url);
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = null;
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      sockets.push(this);
    }
    // --- WebSocket API used by the client ---
    send(text) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closedByClient = { code, reason };
      this.readyState = 3;
    }
    // --- server side, driven by the test ---
    accept() {
      this.readyState = 1;
      if (this.onopen) this.onopen({ type: 'open' });
    }
    push(frame) {
      if (this.onmessage) this.onmessage({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }
    /** Opens the socket and sends a welcome frame. */
    welcome(fields = {}) {
      this.accept();
      this.push({ type: 'welcome', session: 's', node: 'n1', user: 'u1', heartbeat_s: 25, last_seq: 0, ...fields });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      if (this.onclose) this.onclose({ code, reason, wasClean: code !== 1006 });
    }
    /** A handshake that fails (refused upgrade, network down): browsers report 1006. */
    fail() {
      this.readyState = 3;
      if (this.onerror) this.onerror({ type: 'error' });
      if (this.onclose) this.onclose({ code: 1006, reason: '', wasClean: false });
    }
    frames(type) {
      return this.sent.filter((f) => f.type === type);
    }
  }
  return { FakeSocket, sockets };
}

const EVENTS = [
  'connecting', 'open', 'welcome', 'message', 'subscribed', 'unsubscribed', 'pong', 'gap',
  'reconnect', 'error', 'close', 'state', 'online', 'offline', 'clientError',
];

/**
 * A client on a fake socket. `rng.value` is what options.random returns (default 0.5).
 * `events[name]` records every payload of every event.
 */
export function setup(options = {}) {
  const { FakeSocket, sockets } = makeFakeSocketClass();
  const rng = { value: 0.5 };
  const client = new PushgateClient({
    url: 'wss://gw.example/ws',
    token: 'tok',
    WebSocket: FakeSocket,
    random: () => rng.value,
    window: null,
    document: null,
    ...options,
  });
  const events = {};
  for (const name of EVENTS) {
    events[name] = [];
    client.on(name, (payload) => events[name].push(payload));
  }
  return {
    client,
    sockets,
    rng,
    events,
    last: () => sockets[sockets.length - 1],
  };
}

/** A fake `window`: an EventTarget with navigator.onLine. */
export function fakeWindow(onLine = true) {
  const w = new EventTarget();
  w.navigator = { onLine };
  w.fire = (type) => w.dispatchEvent(new Event(type));
  return w;
}

/** A fake `document`: an EventTarget with visibilityState. */
export function fakeDocument(visibilityState = 'visible') {
  const d = new EventTarget();
  d.visibilityState = visibilityState;
  d.setVisibility = (state) => {
    d.visibilityState = state;
    d.dispatchEvent(new Event('visibilitychange'));
  };
  return d;
}

export function message(seq, data = { n: seq }, extra = {}) {
  return { type: 'message', id: 'm' + seq, ts: T0, data, seq, ...extra };
}
