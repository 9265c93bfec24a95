// A real pushgate-gateway process for the browser tests: ephemeral ports, a temp data dir,
// restartable on the same ports and data dir, always killed when the test process ends.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const JS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const GATEWAY_BIN = process.env.PUSHGATE_GATEWAY_BIN
  ? resolve(process.env.PUSHGATE_GATEWAY_BIN)
  : resolve(JS_DIR, '../../target/release/pushgate-gateway');

const READY = /^pushgate-gateway ready client=(\S+) admin=(\S+) node=(\S+)/;
const START_TIMEOUT_MS = 20_000;
const LOG_KEEP = 256 * 1024;

// Every process started here dies with the test process, even on a crash or Ctrl-C.
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => process.exit(130));
}

export function assertGatewayBuilt() {
  if (!existsSync(GATEWAY_BIN)) {
    throw new Error(
      `gateway binary not found at ${GATEWAY_BIN}: build it with ` +
        '`cargo build --release -p pushgate-gateway` (from the repo root) or set PUSHGATE_GATEWAY_BIN',
    );
  }
}

export class Gateway {
  /** @param {{ args?: string[] }} [opts] extra command-line arguments, e.g. ['--set', 'drain_window=1s'] */
  static async start(opts = {}) {
    assertGatewayBuilt();
    const g = new Gateway(await mkdtemp(join(tmpdir(), 'pushgate-browser-')), opts.args ?? []);
    await g.start();
    return g;
  }

  constructor(dataDir, args) {
    this.dataDir = dataDir;
    this.args = args;
    this.child = null;
    this.client = null; // "127.0.0.1:PORT" once started; kept across restarts
    this.admin = null;
    this.node = null;
    this.starts = 0;
    this.log = ''; // stderr of every run (tail), for failure reports
  }

  get url() { return `http://${this.client}`; }
  get adminUrl() { return `http://${this.admin}`; }
  get running() { return this.child !== null && this.child.exitCode === null && this.child.signalCode === null; }

  /** Starts the process; after the first start, on the same client and admin ports. */
  async start() {
    if (this.running) throw new Error('gateway already running');
    const listen = this.client ?? '127.0.0.1:0';
    const adminListen = this.admin ?? '127.0.0.1:0';
    // A restart right after a kill may race the kernel releasing the port: retry a bind failure briefly.
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      try {
        return await this.spawnOnce(listen, adminListen, deadline);
      } catch (err) {
        if (!err.exitedEarly || !this.client || Date.now() > deadline - 1000) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  spawnOnce(listen, adminListen, deadline) {
    const run = ++this.starts;
    this.log += `\n===== start #${run}: --listen ${listen} --admin-listen ${adminListen} =====\n`;
    const child = spawn(
      GATEWAY_BIN,
      ['--listen', listen, '--admin-listen', adminListen, '--data-dir', this.dataDir, ...this.args],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', PUSHGATE_LOG: process.env.PUSHGATE_LOG ?? 'info' } },
    );
    this.child = child;
    live.add(child);
    child.once('exit', () => live.delete(child));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s) => {
      this.log += s;
      if (this.log.length > LOG_KEEP) this.log = this.log.slice(-LOG_KEEP);
    });
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`gateway did not print its ready line within ${START_TIMEOUT_MS} ms\n${this.logTail()}`));
      }, Math.max(1000, deadline - Date.now()));
      const lines = createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        const m = READY.exec(line);
        if (!m) return;
        clearTimeout(timer);
        [, this.client, this.admin, this.node] = m;
        resolvePromise(this);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const err = new Error(`gateway exited before it was ready (code ${code}, signal ${signal})\n${this.logTail()}`);
        err.exitedEarly = true;
        reject(err);
      });
    });
  }

  /** Sends `signal` and waits for the process to exit (SIGTERM drains first). */
  async stop(signal = 'SIGKILL', timeoutMs = 20_000) {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  }

  /** Kills the process and removes the data dir. */
  async dispose() {
    await this.stop('SIGKILL');
    await rm(this.dataDir, { recursive: true, force: true });
  }

  logTail(chars = 4000) {
    return this.log.slice(-chars);
  }

  /** POST /v1/publish on the admin API: resolves with { status, body }. */
  async publish(envelope, timeoutMs = 5000) {
    const r = await fetch(`${this.adminUrl}/v1/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(envelope),
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { status: r.status, body: await r.json().catch(() => null) };
  }

  async presence(user) {
    const r = await fetch(`${this.adminUrl}/v1/users/${encodeURIComponent(user)}/presence`, {
      signal: AbortSignal.timeout(5000),
    });
    if (!r.ok) throw new Error(`presence: ${r.status} ${await r.text()}`);
    return r.json();
  }
}

/**
 * Publishes durable messages to `user` one after another (ids `${prefix}-1`, `${prefix}-2`, ...)
 * until stopped. A publish whose outcome is unknown (refused connection, reset, 5xx while the
 * gateway restarts) is retried with the same id until it gets a 202: the idempotency key makes
 * that safe, so every message is accepted exactly once, in order.
 */
export class Publisher {
  constructor(gateway, user, { prefix = 'm', intervalMs = 15 } = {}) {
    Object.assign(this, { gateway, user, prefix, intervalMs });
    this.accepted = []; // { id, n, duplicate, at }
    this.retries = 0;
    this.stopped = false;
    this.waiters = [];
    this.error = null;
    this.done = this.run().catch((err) => { this.error = err; });
  }

  async run() {
    for (let n = 1; !this.stopped; n++) {
      const id = `${this.prefix}-${n}`;
      const giveUp = Date.now() + 30_000;
      for (;;) {
        if (Date.now() > giveUp) throw new Error(`publish ${id}: no 202 within 30 s`);
        let status = 0;
        let body = null;
        try {
          ({ status, body } = await this.gateway.publish({ id, to: { users: [this.user] }, data: { n, text: `message ${n}` } }, 2000));
        } catch { /* not running, reset, timed out: unknown outcome */ }
        if (status === 202) {
          this.accepted.push({ id, n, duplicate: Boolean(body && body.duplicate), at: Date.now() });
          break;
        }
        if (status >= 400 && status < 500) throw new Error(`publish ${id} refused: ${status} ${JSON.stringify(body)}`);
        this.retries++;
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const w of this.waiters.splice(0)) w();
      await new Promise((r) => setTimeout(r, this.intervalMs));
    }
  }

  get count() { return this.accepted.length; }

  /** Resolves once `count` messages in all have been accepted. */
  async waitFor(count, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    while (this.accepted.length < count) {
      if (this.error) throw this.error;
      if (Date.now() > deadline) throw new Error(`publisher: ${this.accepted.length}/${count} accepted after ${timeoutMs} ms`);
      await Promise.race([new Promise((r) => this.waiters.push(r)), new Promise((r) => setTimeout(r, 200))]);
    }
  }

  async stop() {
    this.stopped = true;
    await this.done;
    if (this.error) throw this.error;
    return this.accepted;
  }
}
