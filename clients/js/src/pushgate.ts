/*!
 * @pushgate/client: WebSocket client SDK for the pushgate push gateway.
 * A single self-contained ES module without imports or runtime dependencies:
 * it runs in browsers (global WebSocket) and in Node (pass a WebSocket constructor).
 * Wire contract: SPEC.md sections 3, 4 and 6. Notes for mobile clients: PROTOCOL.md.
 */

// ---------------------------------------------------------------------------
// Wire frames
// ---------------------------------------------------------------------------

/** First frame of every session. */
export interface WelcomeFrame {
  type: 'welcome';
  session: string;
  node: string;
  user: string;
  /** Interval of the server's WebSocket Ping frames, in seconds. */
  heartbeat_s: number;
  /** The cursor this session's replay starts after. */
  last_seq: number;
}

/** A delivery. `seq` is set for durable user messages, `channel` for channel messages. */
export interface MessageFrame<TData = unknown> {
  type: 'message';
  id: string;
  /** Ingest time, ms since the epoch. */
  ts: number;
  /** The publisher's JSON, verbatim. */
  data: TData;
  seq?: number;
  channel?: string;
}

export interface SubscribedFrame {
  type: 'subscribed';
  channel: string;
  id?: string;
}

export interface UnsubscribedFrame {
  type: 'unsubscribed';
  channel: string;
  id?: string;
}

export interface PongFrame {
  type: 'pong';
  id?: string;
}

/** Non-durable messages were dropped for this (slow) session. */
export interface GapFrame {
  type: 'gap';
  dropped: number;
  channel?: string;
}

/** The node is draining: reconnect (to any node) after `after_ms`. */
export interface ReconnectFrame {
  type: 'reconnect';
  after_ms: number;
}

/** Error codes defined by SPEC §4. The server may add more. */
export type ErrorCode =
  | 'bad_frame'
  | 'unknown_type'
  | 'forbidden'
  | 'invalid_channel'
  | 'too_many_channels'
  | 'rate_limited';

/** A client frame was refused; the session stays open. */
export interface ErrorFrame {
  type: 'error';
  code: ErrorCode | (string & {});
  message: string;
  id?: string;
}

export type ServerFrame<TData = unknown> =
  | WelcomeFrame
  | MessageFrame<TData>
  | SubscribedFrame
  | UnsubscribedFrame
  | PongFrame
  | GapFrame
  | ReconnectFrame
  | ErrorFrame;

export type ClientFrame =
  | { type: 'subscribe'; channel: string; token?: string; id?: string }
  | { type: 'unsubscribe'; channel: string; id?: string }
  | { type: 'ack'; seq: number }
  | { type: 'ping'; id?: string };

/** WebSocket close codes used by pushgate (SPEC §4), plus 1006 for a connection lost without a close frame. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  POLICY: 1008,
  TOO_LARGE: 1009,
  INTERNAL_ERROR: 1011,
  RESTARTING: 1012,
  OVERLOADED: 1013,
  ADMIN_DISCONNECT: 4000,
  SLOW_CONSUMER: 4001,
  HEARTBEAT_TIMEOUT: 4002,
  RATE_LIMITED: 4008,
} as const;

// ---------------------------------------------------------------------------
// Typed event emitter
// ---------------------------------------------------------------------------

export type Listener<T> = (payload: T) => void;

/**
 * A tiny typed event emitter. Listeners run synchronously in registration order;
 * a listener that throws does not stop the others (see `onListenerError`).
 */
export class TypedEmitter<M> {
  private readonly listenerMap: { [K in keyof M]?: Listener<M[K]>[] } = Object.create(null);

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof M>(event: K, listener: Listener<M[K]>): () => void {
    const list = this.listenerMap[event] || (this.listenerMap[event] = []);
    list.push(listener);
    return () => this.off(event, listener);
  }

  /** Adds a listener that is removed after its first call (remove it early with the returned function). */
  once<K extends keyof M>(event: K, listener: Listener<M[K]>): () => void {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /** Removes a listener (or every listener of `event` when `listener` is omitted). */
  off<K extends keyof M>(event: K, listener?: Listener<M[K]>): void {
    const list = this.listenerMap[event];
    if (!list) return;
    if (!listener) {
      delete this.listenerMap[event];
      return;
    }
    const i = list.indexOf(listener);
    if (i >= 0) list.splice(i, 1);
  }

  listenerCount<K extends keyof M>(event: K): number {
    const list = this.listenerMap[event];
    return list ? list.length : 0;
  }

  protected emit<K extends keyof M>(event: K, payload: M[K]): void {
    const list = this.listenerMap[event];
    if (!list || list.length === 0) return;
    for (const listener of list.slice()) {
      try {
        listener(payload);
      } catch (err) {
        this.onListenerError(err, event);
      }
    }
  }

  /** Called when a listener throws. The default reports it on the console. */
  protected onListenerError(err: unknown, event: keyof M): void {
    const c = (globalThis as { console?: { error?: (...a: unknown[]) => void } }).console;
    if (c && c.error) c.error('pushgate: listener for "' + String(event) + '" threw', err);
  }
}

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/** The subset of the WebSocket API the client uses (browser WebSocket, `ws`, undici all fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Something that emits `online` / `offline` (a browser `window` or worker `self`). */
export interface NetworkTarget {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
  navigator?: { onLine?: boolean };
}

/** Something that emits `visibilitychange` (a browser `document`). */
export interface VisibilityTarget {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
  visibilityState?: string;
}

export type TokenSource = () => string | Promise<string>;
export type ChannelTokenSource = (
  channel: string,
) => string | undefined | null | Promise<string | undefined | null>;

export interface PushgateOptions {
  /** `wss://host/ws`; `https://`/`http://` are mapped to `wss://`/`ws://`; a path like `/ws` resolves against `location` in browsers. */
  url: string;
  /** A static client JWT. */
  token?: string;
  /** Fetches a client JWT; called before every connection attempt, so tokens get refreshed. Wins over `token`. */
  getToken?: TokenSource;
  /** WebSocket constructor; defaults to the global `WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Resume cursor for the first connection (e.g. restored from storage). Default: let the server decide. */
  lastSeq?: number;
  /** Acknowledge durable messages automatically once the `message` listeners have run. Default true. */
  autoAck?: boolean;
  /** Send an ack once this many durable messages are handled. Default 20. */
  ackBatchSize?: number;
  /** ...or this many ms after the first unacked one, whichever comes first. Default 1000. */
  ackIntervalMs?: number;
  /** Reconnect automatically. Default true. */
  reconnect?: boolean;
  /** Base of the exponential backoff (full jitter). Default 500 ms. */
  backoffBaseMs?: number;
  /** Cap of the exponential backoff. Default 30000 ms. */
  backoffMaxMs?: number;
  /** Upper bound of the random delay after close code 1012 (node restarting). Default 1000 ms. */
  quickReconnectMaxMs?: number;
  /** Minimum delay after close code 1013 (overloaded), added to the normal backoff. Default 10000 ms. */
  overloadedDelayMs?: number;
  /** A session that stayed up this long resets the backoff. Default 10000 ms. */
  stableSessionMs?: number;
  /** Give up after this many consecutive backoff attempts. Default Infinity. */
  maxReconnectAttempts?: number;
  /** Liveness: a `ping` unanswered (no frame at all) for this long drops the socket. Default 5000 ms. */
  pingTimeoutMs?: number;
  /** A subscribe / unsubscribe without reply for this long is rejected. 0 disables. Default 10000 ms. */
  requestTimeoutMs?: number;
  /** Channel JWT for channels the session token does not allow; called on every (re)subscribe. */
  getChannelToken?: ChannelTokenSource;
  /** `online`/`offline` source. Default: the global object in browsers/workers; `null` disables. */
  window?: NetworkTarget | null;
  /** `visibilitychange` source. Default: the global `document`; `null` disables. */
  document?: VisibilityTarget | null;
  /** Random source in [0, 1), for tests. Default Math.random. */
  random?: () => number;
  /** Clock in ms, for tests. Default Date.now. */
  now?: () => number;
}

export interface SubscribeOptions {
  /** A static channel JWT. */
  token?: string;
  /** Fetches a channel JWT; called on every (re)subscribe. Wins over `token` and `getChannelToken`. */
  getToken?: ChannelTokenSource;
}

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ConnectingEvent {
  /** Backoff attempts since the last stable session (0 for the first connection). */
  attempt: number;
  /** The URL without the token. */
  url: string;
  /** The `last_seq` sent, if any. */
  lastSeq: number | null;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
  /** Whether the client will reconnect on its own. */
  willReconnect: boolean;
  /** Delay before that reconnect, when `willReconnect`. */
  delayMs?: number;
}

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
}

export interface ClientErrorInfo {
  /**
   * What failed: `token` (getToken), `socket` (constructor / send), `frame` (unparseable
   * server frame), `subscribe` (channel token callback failed or subscribe timed out; the
   * channel is dropped), `listener` (an event listener threw).
   */
  context: 'token' | 'socket' | 'frame' | 'subscribe' | 'listener';
  error: unknown;
  channel?: string;
}

export interface PushgateEventMap<TData = unknown> {
  /** A connection attempt starts (token fetch included). Followed by `welcome` or `close`. */
  connecting: ConnectingEvent;
  /** The WebSocket opened; the session is usable after `welcome`. */
  open: { url: string };
  welcome: WelcomeFrame;
  message: MessageFrame<TData>;
  subscribed: SubscribedFrame;
  unsubscribed: UnsubscribedFrame;
  pong: PongFrame;
  gap: GapFrame;
  reconnect: ReconnectFrame;
  /** An `error` frame from the server. */
  error: ErrorFrame;
  /** A connection (attempt) ended. */
  close: CloseInfo;
  state: StateChange;
  online: void;
  offline: void;
  /** Every parsed server frame, known types or not, before it is handled. */
  frame: { type: string; [field: string]: unknown };
  /** Local failures: token callbacks, unparseable frames, throwing listeners. */
  clientError: ClientErrorInfo;
}

/** Errors from the client: `code` is a server error code (`forbidden`, ...) or `timeout`, `closed`, `not_connected`, `unsubscribed`, `disconnected`. */
export class PushgateError extends Error {
  readonly code: string;
  readonly frame?: ErrorFrame;
  readonly closeCode?: number;
  constructor(code: string, message: string, extra?: { frame?: ErrorFrame; closeCode?: number }) {
    super(message);
    this.name = 'PushgateError';
    this.code = code;
    if (extra && extra.frame) this.frame = extra.frame;
    if (extra && extra.closeCode !== undefined) this.closeCode = extra.closeCode;
  }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

type Timer = ReturnType<typeof setTimeout>;

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Subscription {
  channel: string;
  token?: string;
  getToken?: ChannelTokenSource;
  confirmed: boolean;
  /** Connection generation the subscribe was sent on (-1: not sent). */
  sentGen: number;
  reqId: string | null;
  timer: Timer | null;
  waiters: Waiter[];
}

interface PendingRequest {
  kind: 'unsubscribe' | 'ping';
  resolve: () => void;
  reject: (err: Error) => void;
  timer: Timer | null;
}

interface ReconnectPlan {
  delayMs: number;
  kind: 'backoff' | 'quick' | 'drain' | 'overloaded';
}

const OPEN = 1;

function isThenable<T>(v: unknown): v is PromiseLike<T> {
  return !!v && typeof (v as { then?: unknown }).then === 'function';
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function optNumber(v: number | undefined, dflt: number, min = 0): number {
  return typeof v === 'number' && !isNaN(v) && v >= min ? v : dflt;
}

function noop(): void {
  /* detached socket handler */
}

/**
 * Marks a returned promise as handled, so that callers may ignore it without an
 * unhandled-rejection warning; awaiting it still throws. Failures are also events.
 */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(noop);
  return p;
}

/**
 * pushgate client.
 *
 * ```js
 * const c = new PushgateClient({ url: 'wss://push.example.com/ws', getToken: fetchToken });
 * c.on('message', (m) => console.log(m.data));
 * await c.connect();
 * await c.subscribe('news');
 * c.close();
 * ```
 */
export class PushgateClient<TData = unknown> extends TypedEmitter<PushgateEventMap<TData>> {
  private readonly opts: PushgateOptions;
  private readonly Ctor: WebSocketConstructor | undefined;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly win: NetworkTarget | null;
  private readonly doc: VisibilityTarget | null;

  private ws: WebSocketLike | null = null;
  /** Bumped for every connection attempt and on close(); stale callbacks compare against it. */
  private generation = 0;
  private stateValue: ConnectionState = 'idle';
  private welcomeFrame: WelcomeFrame | null = null;
  private welcomeAt: number | null = null;
  private framesReceived = 0;

  // reconnect
  private attempt = 0;
  private reconnectTimer: Timer | null = null;
  private reconnectKind: ReconnectPlan['kind'] | null = null;
  private waitingForNetwork = false;
  private drainDeadline: number | null = null;
  private drainTimer: Timer | null = null;
  private envAttached = false;
  private connectWaiters: { resolve: (w: WelcomeFrame) => void; reject: (e: Error) => void }[] = [];

  // resume / ack
  private highestSeq: number | null;
  /** The last_seq sent on the current connection (null: none). */
  private resumeSent: number | null = null;
  /** Highest seq this session may ack: max(welcome.last_seq, highest seq received on it). */
  private sessionMaxSeq = 0;
  private handledSeq = 0;
  private ackedSeqValue = 0;
  private pendingAcks = 0;
  private ackTimer: Timer | null = null;
  private duplicates = 0;

  // requests
  private readonly subs = new Map<string, Subscription>();
  private readonly pending = new Map<string, PendingRequest>();
  private idCounter = 0;

  constructor(options: PushgateOptions) {
    super();
    if (!options || typeof options.url !== 'string' || !options.url) {
      throw new TypeError('PushgateClient: options.url is required');
    }
    this.opts = options;
    const g = globalThis as unknown as {
      WebSocket?: WebSocketConstructor;
      document?: VisibilityTarget;
      addEventListener?: unknown;
    };
    this.Ctor = options.WebSocket || g.WebSocket;
    this.random = options.random || Math.random;
    this.now = options.now || (() => Date.now());
    this.win =
      options.window !== undefined
        ? options.window
        : typeof g.addEventListener === 'function'
          ? (g as unknown as NetworkTarget)
          : null;
    this.doc = options.document !== undefined ? options.document : g.document || null;
    this.highestSeq =
      typeof options.lastSeq === 'number' && options.lastSeq >= 0 ? Math.floor(options.lastSeq) : null;
  }

  // ----- getters -----

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The current session's `welcome`, or null when not connected. */
  get session(): WelcomeFrame | null {
    return this.stateValue === 'open' ? this.welcomeFrame : null;
  }

  /** Highest durable `seq` received (the resume cursor sent as `last_seq`), or null if none yet. */
  get lastSeq(): number | null {
    return this.highestSeq;
  }

  /** Highest `seq` acknowledged to the server (or known acked by it). */
  get ackedSeq(): number {
    return this.ackedSeqValue;
  }

  /** Duplicate durable messages dropped so far. */
  get duplicatesDropped(): number {
    return this.duplicates;
  }

  /** Channels the client wants to be subscribed to (confirmed or not). */
  get channels(): string[] {
    return Array.from(this.subs.keys());
  }

  /** Whether the server confirmed the subscription on the current session. */
  isSubscribed(channel: string): boolean {
    const s = this.subs.get(channel);
    return !!s && s.confirmed && this.stateValue === 'open';
  }

  // ----- lifecycle -----

  /**
   * Connects (no-op when already connecting or open). Resolves with the first `welcome`;
   * transient failures are retried per the reconnect rules. Rejects when the client
   * ends in `closed` first (close(), 4000, 1008, reconnect disabled, attempts exhausted).
   */
  connect(): Promise<WelcomeFrame> {
    if (this.stateValue === 'open' && this.welcomeFrame) return Promise.resolve(this.welcomeFrame);
    const p = quiet(new Promise<WelcomeFrame>((resolve, reject) => this.connectWaiters.push({ resolve, reject })));
    if (this.stateValue === 'idle' || this.stateValue === 'closed') {
      this.attempt = 0;
      this.attachEnvironment();
      this.openSocket();
    }
    return p;
  }

  /**
   * Closes deliberately: flushes the pending ack, closes the socket and stops reconnecting.
   * Subscriptions are kept, so a later `connect()` restores them.
   */
  close(code: number = CloseCode.NORMAL, reason = 'client closed'): void {
    if (this.stateValue === 'idle' || this.stateValue === 'closed') return;
    this.flushAck();
    this.generation++;
    this.clearReconnectTimer();
    this.teardownSocket(code, reason);
    this.finish({ code, reason, wasClean: true, willReconnect: false });
  }

  /**
   * Sends an application-level ping. Resolves with the round trip in ms when the `pong`
   * arrives. If no frame at all arrives within `pingTimeoutMs`, the socket is considered
   * dead: it is dropped and the client reconnects (the promise rejects with `timeout`).
   */
  ping(): Promise<number> {
    const ws = this.ws;
    if (this.stateValue !== 'open' || !ws) {
      return Promise.reject(new PushgateError('not_connected', 'not connected'));
    }
    const id = this.nextId();
    const sentAt = this.now();
    const framesAtSend = this.framesReceived;
    return quiet(new Promise<number>((resolve, reject) => {
      const req: PendingRequest = {
        kind: 'ping',
        resolve: () => resolve(this.now() - sentAt),
        reject,
        timer: null,
      };
      req.timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new PushgateError('timeout', 'ping timeout'));
        if (this.ws === ws && this.framesReceived === framesAtSend) {
          this.dropSocket(CloseCode.ABNORMAL, 'ping timeout', false);
        }
      }, optNumber(this.opts.pingTimeoutMs, 5000, 1));
      this.pending.set(id, req);
      this.send({ type: 'ping', id });
    }));
  }

  // ----- subscriptions -----

  /**
   * Subscribes to a channel. The subscription survives reconnects (it is re-sent after every
   * `welcome`). Resolves on `subscribed`; rejects on a matching `error` frame (the channel is
   * then forgotten), on `unsubscribe()` or `close()` before confirmation, or on timeout.
   */
  subscribe(channel: string, options: SubscribeOptions = {}): Promise<void> {
    if (typeof channel !== 'string' || channel.length === 0) {
      return Promise.reject(new TypeError('subscribe: channel must be a non-empty string'));
    }
    let sub = this.subs.get(channel);
    if (!sub) {
      sub = { channel, confirmed: false, sentGen: -1, reqId: null, timer: null, waiters: [] };
      this.subs.set(channel, sub);
    }
    if (options.token !== undefined) sub.token = options.token;
    if (options.getToken) sub.getToken = options.getToken;
    if (sub.confirmed && this.stateValue === 'open') return Promise.resolve();
    const s = sub;
    const p = quiet(new Promise<void>((resolve, reject) => s.waiters.push({ resolve, reject })));
    if (this.stateValue === 'open' && s.sentGen !== this.generation) this.sendSubscribe(s);
    return p;
  }

  /**
   * Unsubscribes and forgets the channel. Resolves on `unsubscribed` (or at once when not
   * connected, or when the connection drops first); rejects on a matching `error` frame.
   */
  unsubscribe(channel: string): Promise<void> {
    const sub = this.subs.get(channel);
    if (!sub) return Promise.resolve();
    this.subs.delete(channel);
    this.clearTimer(sub);
    const waiters = sub.waiters.splice(0);
    for (const w of waiters) w.reject(new PushgateError('unsubscribed', 'unsubscribed before confirmation'));
    if (this.stateValue !== 'open' || sub.sentGen !== this.generation) return Promise.resolve();
    return this.request('unsubscribe', { type: 'unsubscribe', channel });
  }

  // ----- acks -----

  /**
   * Marks durable messages up to `seq` (default: the highest received) as handled. Acks are
   * cumulative and batched (`ackBatchSize` / `ackIntervalMs`). With `autoAck` (the default)
   * the client does this itself after the `message` listeners ran.
   */
  ack(seq?: number): void {
    if (this.highestSeq === null) return;
    const s = seq === undefined ? this.highestSeq : Math.min(Math.floor(seq), this.highestSeq);
    if (!(s > 0)) return;
    this.markHandled(s);
  }

  /** Sends the pending cumulative ack now (if connected). Returns whether an ack was sent. */
  flushAck(): boolean {
    this.clearAckTimer();
    if (this.stateValue !== 'open' || !this.ws || this.ws.readyState !== OPEN) return false;
    const s = Math.min(this.handledSeq, this.sessionMaxSeq);
    if (s <= this.ackedSeqValue) return false;
    this.ackedSeqValue = s;
    this.pendingAcks = 0;
    return this.send({ type: 'ack', seq: s });
  }

  // -------------------------------------------------------------------------
  // internals: connection
  // -------------------------------------------------------------------------

  protected onListenerError(err: unknown, event: keyof PushgateEventMap<TData>): void {
    if (event !== 'clientError' && this.listenerCount('clientError') > 0) {
      this.emit('clientError', { context: 'listener', error: err });
    } else {
      super.onListenerError(err, event);
    }
  }

  private setState(next: ConnectionState): void {
    const previous = this.stateValue;
    if (previous === next) return;
    this.stateValue = next;
    this.emit('state', { state: next, previous });
  }

  private openSocket(): void {
    const gen = ++this.generation;
    this.reconnectKind = null;
    this.waitingForNetwork = false;
    this.setState('connecting');
    this.emit('connecting', {
      attempt: this.attempt,
      url: this.buildUrl(undefined),
      lastSeq: this.highestSeq,
    });
    if (gen !== this.generation) return; // a listener called close()
    let token: string | Promise<string> | undefined;
    try {
      token = this.opts.getToken ? this.opts.getToken() : this.opts.token;
    } catch (err) {
      this.tokenFailed(gen, err);
      return;
    }
    if (isThenable<string>(token)) {
      token.then(
        (t) => {
          if (gen === this.generation) this.createSocket(gen, t);
        },
        (err) => this.tokenFailed(gen, err),
      );
    } else {
      this.createSocket(gen, token);
    }
  }

  private tokenFailed(gen: number, err: unknown): void {
    if (gen !== this.generation) return;
    this.emit('clientError', { context: 'token', error: err });
    if (gen !== this.generation) return;
    this.handleClosed(CloseCode.ABNORMAL, 'token fetch failed: ' + errorMessage(err), false);
  }

  private createSocket(gen: number, token: string | undefined): void {
    const Ctor = this.Ctor;
    this.resumeSent = this.highestSeq;
    let ws: WebSocketLike;
    let url: string;
    try {
      if (!Ctor) throw new Error('no WebSocket implementation: pass options.WebSocket');
      url = this.buildUrl(token);
      ws = new Ctor(url);
    } catch (err) {
      this.emit('clientError', { context: 'socket', error: err });
      if (gen === this.generation) {
        this.handleClosed(CloseCode.ABNORMAL, 'socket creation failed: ' + errorMessage(err), false);
      }
      return;
    }
    this.ws = ws;
    this.framesReceived = 0;
    ws.onopen = () => {
      if (this.ws === ws) this.emit('open', { url: this.buildUrl(undefined) });
    };
    ws.onmessage = (ev: { data?: unknown }) => {
      if (this.ws === ws) this.onData(ev ? ev.data : undefined);
    };
    ws.onerror = noop; // a close event always follows
    ws.onclose = (ev: { code?: number; reason?: string; wasClean?: boolean }) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.detach(ws);
      this.handleClosed(
        ev && typeof ev.code === 'number' ? ev.code : CloseCode.ABNORMAL,
        (ev && ev.reason) || '',
        !!(ev && ev.wasClean),
      );
    };
  }

  private buildUrl(token: string | undefined): string {
    let base = this.opts.url;
    const loc = (globalThis as { location?: { protocol: string; host: string } }).location;
    if (base.charAt(0) === '/' && loc && loc.host) {
      base = (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + base;
    } else if (/^http/i.test(base)) {
      base = base.replace(/^http/i, 'ws');
    }
    const u = new URL(base);
    u.searchParams.delete('token');
    u.searchParams.delete('last_seq');
    if (token) u.searchParams.set('token', token);
    if (this.highestSeq !== null) u.searchParams.set('last_seq', String(this.highestSeq));
    return u.toString();
  }

  private detach(ws: WebSocketLike): void {
    ws.onopen = noop;
    ws.onmessage = noop;
    ws.onclose = noop;
    ws.onerror = noop;
  }

  /** Closes and forgets the current socket without waiting for its close event. */
  private teardownSocket(code: number, reason: string): void {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this.detach(ws);
    try {
      ws.close(code >= 3000 && code <= 4999 ? code : CloseCode.NORMAL, reason.slice(0, 120));
    } catch {
      /* already closing or never opened */
    }
  }

  /** Client-side decision to drop a live socket (liveness timeout, drain); then reconnect. */
  private dropSocket(code: number, reason: string, wasClean: boolean): void {
    this.teardownSocket(CloseCode.NORMAL, reason);
    this.handleClosed(code, reason, wasClean);
  }

  /** A connection (attempt) ended: clean up the session, then reconnect or finish. */
  private handleClosed(code: number, reason: string, wasClean: boolean): void {
    this.endSession();
    const plan = this.planReconnect(code);
    if (!plan) {
      this.finish({ code, reason, wasClean, willReconnect: false });
      return;
    }
    // State first, so that listeners of `close` see `reconnecting` and may call close().
    this.scheduleReconnect(plan);
    this.emit('close', { code, reason, wasClean, willReconnect: true, delayMs: plan.delayMs });
  }

  /** Per-session cleanup shared by every way a connection ends. */
  private endSession(): void {
    if (this.welcomeAt !== null && this.now() - this.welcomeAt >= optNumber(this.opts.stableSessionMs, 10000)) {
      this.attempt = 0;
    }
    this.welcomeAt = null;
    this.clearAckTimer();
    this.clearDrainTimer();
    for (const sub of this.subs.values()) {
      this.clearTimer(sub);
      sub.confirmed = false;
      sub.reqId = null;
      sub.sentGen = -1;
    }
    const pending = Array.from(this.pending.values());
    this.pending.clear();
    for (const req of pending) {
      if (req.timer !== null) clearTimeout(req.timer);
      // The session is gone, and with it its server-side subscriptions.
      if (req.kind === 'unsubscribe') req.resolve();
      else req.reject(new PushgateError('disconnected', 'connection closed'));
    }
  }

  private planReconnect(code: number): ReconnectPlan | null {
    const drainDeadline = this.drainDeadline;
    this.drainDeadline = null;
    if (this.opts.reconnect === false) return null;
    if (code === CloseCode.ADMIN_DISCONNECT || code === CloseCode.POLICY) return null;
    if (drainDeadline !== null) {
      return { delayMs: Math.max(0, drainDeadline - this.now()), kind: 'drain' };
    }
    if (code === CloseCode.RESTARTING) {
      return { delayMs: Math.floor(this.random() * optNumber(this.opts.quickReconnectMaxMs, 1000)), kind: 'quick' };
    }
    const max = optNumber(this.opts.maxReconnectAttempts, Infinity);
    if (this.attempt >= max) return null;
    const jitter = this.backoff(this.attempt++);
    if (code === CloseCode.OVERLOADED) {
      return { delayMs: optNumber(this.opts.overloadedDelayMs, 10000) + jitter, kind: 'overloaded' };
    }
    return { delayMs: jitter, kind: 'backoff' };
  }

  /** Full jitter: random in [0, min(max, base * 2^attempt)). */
  private backoff(attempt: number): number {
    const base = optNumber(this.opts.backoffBaseMs, 500);
    const max = optNumber(this.opts.backoffMaxMs, 30000);
    const cap = Math.min(max, base * Math.pow(2, Math.min(attempt, 30)));
    return Math.floor(this.random() * cap);
  }

  private scheduleReconnect(plan: ReconnectPlan): void {
    this.clearReconnectTimer();
    this.reconnectKind = plan.kind;
    const gen = this.generation;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (gen !== this.generation || this.stateValue !== 'reconnecting') return;
      if (!this.isOnline()) {
        this.waitingForNetwork = true; // resumed by the `online` event
        return;
      }
      this.openSocket();
    }, plan.delayMs);
    this.setState('reconnecting');
  }

  private clearReconnectTimer(): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  /** The client ends in `closed`. */
  private finish(info: CloseInfo): void {
    this.endSession();
    this.clearReconnectTimer();
    this.reconnectKind = null;
    this.waitingForNetwork = false;
    this.detachEnvironment();
    // Collect waiters before any listener runs: a listener may call connect() again.
    const subWaiters: Waiter[] = [];
    for (const sub of this.subs.values()) subWaiters.push(...sub.waiters.splice(0));
    const connectWaiters = this.connectWaiters.splice(0);
    const err = new PushgateError(
      'closed',
      'connection closed (' + info.code + (info.reason ? ' ' + info.reason : '') + ')',
      { closeCode: info.code },
    );
    for (const w of subWaiters) w.reject(err);
    for (const w of connectWaiters) w.reject(err);
    this.setState('closed');
    this.emit('close', info);
  }

  // -------------------------------------------------------------------------
  // internals: frames
  // -------------------------------------------------------------------------

  private nextId(): string {
    this.idCounter = (this.idCounter + 1) % 1e15;
    return 'c' + this.idCounter;
  }

  private send(frame: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch (err) {
      this.emit('clientError', { context: 'socket', error: err });
      return false;
    }
  }

  private request(kind: 'unsubscribe', frame: { type: 'unsubscribe'; channel: string }): Promise<void> {
    const id = this.nextId();
    return quiet(new Promise<void>((resolve, reject) => {
      const req: PendingRequest = { kind, resolve, reject, timer: null };
      const timeout = optNumber(this.opts.requestTimeoutMs, 10000);
      if (timeout > 0) {
        req.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new PushgateError('timeout', kind + ' timed out'));
        }, timeout);
      }
      this.pending.set(id, req);
      this.send({ ...frame, id });
    }));
  }

  private onData(data: unknown): void {
    if (typeof data !== 'string') {
      this.emit('clientError', { context: 'frame', error: new Error('non-text frame ignored') });
      return;
    }
    let f: { type?: unknown; [k: string]: unknown };
    try {
      f = JSON.parse(data);
    } catch (err) {
      this.emit('clientError', { context: 'frame', error: err });
      return;
    }
    if (!f || typeof f !== 'object' || typeof f.type !== 'string') {
      this.emit('clientError', { context: 'frame', error: new Error('frame without a type') });
      return;
    }
    this.framesReceived++;
    this.emit('frame', f as PushgateEventMap['frame']);
    const frame = f as unknown as ServerFrame<TData>;
    switch (frame.type) {
      case 'welcome':
        return this.onWelcome(frame);
      case 'message':
        return this.onMessage(frame);
      case 'subscribed':
        return this.onSubscribed(frame);
      case 'unsubscribed':
        return this.onReply(frame, 'unsubscribed');
      case 'pong':
        return this.onReply(frame, 'pong');
      case 'gap':
        this.emit('gap', frame);
        return;
      case 'reconnect':
        return this.onReconnectFrame(frame);
      case 'error':
        return this.onError(frame);
      default:
        return; // unknown types are allowed by the contract (additions); see the `frame` event
    }
  }

  private onWelcome(f: WelcomeFrame): void {
    this.welcomeFrame = f;
    this.welcomeAt = this.now();
    const cursor = typeof f.last_seq === 'number' && f.last_seq >= 0 ? f.last_seq : null;
    if (cursor !== null) {
      if (this.resumeSent === null) {
        // Without last_seq the cursor is what this device (or user) already acked (SPEC §6).
        if (cursor > this.ackedSeqValue) this.ackedSeqValue = cursor;
        if (cursor > this.handledSeq) this.handledSeq = cursor;
      }
      if (this.highestSeq === null || cursor > this.highestSeq) this.highestSeq = cursor;
      this.sessionMaxSeq = cursor;
    } else {
      this.sessionMaxSeq = this.resumeSent !== null ? this.resumeSent : 0;
    }
    const gen = this.generation;
    this.setState('open');
    if (gen !== this.generation) return; // a listener called close()
    for (const sub of Array.from(this.subs.values())) {
      if (sub.sentGen !== gen) this.sendSubscribe(sub);
    }
    if (this.handledSeq > this.ackedSeqValue) this.flushAck();
    const waiters = this.connectWaiters.splice(0);
    for (const w of waiters) w.resolve(f);
    this.emit('welcome', f);
  }

  private onMessage(f: MessageFrame<TData>): void {
    const seq = typeof f.seq === 'number' ? f.seq : null;
    if (seq !== null) {
      if (this.highestSeq !== null && seq <= this.highestSeq) {
        this.duplicates++;
        return;
      }
      this.highestSeq = seq;
      if (seq > this.sessionMaxSeq) this.sessionMaxSeq = seq;
    }
    this.emit('message', f);
    if (seq !== null && this.opts.autoAck !== false) this.markHandled(seq);
  }

  private onSubscribed(f: SubscribedFrame): void {
    let sub: Subscription | undefined;
    if (f.id !== undefined) {
      for (const s of this.subs.values()) {
        if (s.reqId === f.id) {
          sub = s;
          break;
        }
      }
    } else {
      sub = this.subs.get(f.channel);
    }
    if (sub) {
      this.clearTimer(sub);
      sub.reqId = null;
      sub.confirmed = true;
      const waiters = sub.waiters.splice(0);
      for (const w of waiters) w.resolve();
    }
    this.emit('subscribed', f);
  }

  private onReply(f: UnsubscribedFrame | PongFrame, event: 'unsubscribed' | 'pong'): void {
    if (f.id !== undefined) {
      const req = this.pending.get(f.id);
      if (req && req.kind === (event === 'pong' ? 'ping' : 'unsubscribe')) {
        this.pending.delete(f.id);
        if (req.timer !== null) clearTimeout(req.timer);
        req.resolve();
      }
    }
    if (event === 'pong') this.emit('pong', f as PongFrame);
    else this.emit('unsubscribed', f as UnsubscribedFrame);
  }

  private onReconnectFrame(f: ReconnectFrame): void {
    const after = typeof f.after_ms === 'number' && f.after_ms > 0 ? f.after_ms : 0;
    this.drainDeadline = this.now() + after;
    this.flushAck();
    this.clearDrainTimer();
    const ws = this.ws;
    // The server closes with 1012 by itself; if it does not, leave at the deadline anyway.
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      if (this.ws === ws && ws) {
        this.flushAck();
        this.dropSocket(CloseCode.RESTARTING, 'server requested reconnect', true);
      }
    }, after);
    this.emit('reconnect', f);
  }

  private onError(f: ErrorFrame): void {
    if (f.id !== undefined) {
      const err = new PushgateError(String(f.code), f.message || String(f.code), { frame: f });
      const req = this.pending.get(f.id);
      if (req) {
        this.pending.delete(f.id);
        if (req.timer !== null) clearTimeout(req.timer);
        req.reject(err);
      } else {
        for (const sub of this.subs.values()) {
          if (sub.reqId === f.id) {
            this.failSubscription(sub, err, false);
            break;
          }
        }
      }
    }
    this.emit('error', f);
  }

  // -------------------------------------------------------------------------
  // internals: subscriptions and acks
  // -------------------------------------------------------------------------

  private sendSubscribe(sub: Subscription): void {
    const gen = this.generation;
    const id = this.nextId();
    sub.sentGen = gen;
    sub.reqId = id;
    sub.confirmed = false;
    const go = (token: string | undefined | null) => {
      if (gen !== this.generation || this.subs.get(sub.channel) !== sub || sub.reqId !== id) return;
      const frame: ClientFrame = token
        ? { type: 'subscribe', channel: sub.channel, token, id }
        : { type: 'subscribe', channel: sub.channel, id };
      this.clearTimer(sub);
      const timeout = optNumber(this.opts.requestTimeoutMs, 10000);
      if (timeout > 0) {
        sub.timer = setTimeout(() => {
          sub.timer = null;
          if (sub.reqId !== id) return;
          this.failSubscription(sub, new PushgateError('timeout', 'subscribe ' + sub.channel + ' timed out'), true);
          if (this.stateValue === 'open') this.send({ type: 'unsubscribe', channel: sub.channel });
        }, timeout);
      }
      this.send(frame);
    };
    const fail = (err: unknown) => {
      if (gen !== this.generation || this.subs.get(sub.channel) !== sub || sub.reqId !== id) return;
      this.failSubscription(sub, err instanceof Error ? err : new Error('channel token: ' + String(err)), true);
    };
    let token: string | undefined | null | PromiseLike<string | undefined | null>;
    try {
      const source = sub.getToken || (sub.token === undefined ? this.opts.getChannelToken : undefined);
      token = source ? source(sub.channel) : sub.token;
    } catch (err) {
      fail(err);
      return;
    }
    if (isThenable<string | undefined | null>(token)) token.then(go, fail);
    else go(token);
  }

  /** The subscription is refused: forget it and reject its waiters. */
  private failSubscription(sub: Subscription, err: Error, report: boolean): void {
    this.clearTimer(sub);
    sub.reqId = null;
    if (this.subs.get(sub.channel) === sub) this.subs.delete(sub.channel);
    const waiters = sub.waiters.splice(0);
    for (const w of waiters) w.reject(err);
    if (report) this.emit('clientError', { context: 'subscribe', error: err, channel: sub.channel });
  }

  private clearTimer(sub: Subscription): void {
    if (sub.timer !== null) clearTimeout(sub.timer);
    sub.timer = null;
  }

  private markHandled(seq: number): void {
    if (seq <= this.handledSeq) return;
    // seqs are consecutive per user, so the distance is the number of newly handled messages
    // (an over-estimate after a resume only makes the next ack come earlier).
    this.pendingAcks += seq - this.handledSeq;
    this.handledSeq = seq;
    if (this.pendingAcks >= optNumber(this.opts.ackBatchSize, 20, 1)) {
      this.flushAck();
    } else if (this.ackTimer === null && this.stateValue === 'open') {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        this.flushAck();
      }, optNumber(this.opts.ackIntervalMs, 1000));
    }
  }

  private clearAckTimer(): void {
    if (this.ackTimer !== null) clearTimeout(this.ackTimer);
    this.ackTimer = null;
  }

  private clearDrainTimer(): void {
    if (this.drainTimer !== null) clearTimeout(this.drainTimer);
    this.drainTimer = null;
  }

  // -------------------------------------------------------------------------
  // internals: browser environment (guarded, so Node works without it)
  // -------------------------------------------------------------------------

  private readonly onOnline = (): void => {
    this.emit('online', undefined);
    if (this.stateValue === 'open') {
      this.probe();
    } else if (this.stateValue === 'reconnecting') {
      // Network is back: do not sit out a backoff that was caused by the network.
      if (this.waitingForNetwork || this.reconnectKind === 'backoff') {
        this.clearReconnectTimer();
        this.openSocket();
      }
    }
  };

  private readonly onOffline = (): void => {
    this.emit('offline', undefined);
  };

  private readonly onVisibility = (): void => {
    const d = this.doc;
    if (!d) return;
    if (d.visibilityState === 'visible') {
      if (this.stateValue === 'open') this.probe();
    } else if (d.visibilityState === 'hidden') {
      this.flushAck(); // the page may be frozen or discarded from here on
    }
  };

  private probe(): void {
    this.ping().catch(noop);
  }

  private isOnline(): boolean {
    const nav = this.win ? this.win.navigator : undefined;
    return !(nav && nav.onLine === false);
  }

  private attachEnvironment(): void {
    if (this.envAttached) return;
    this.envAttached = true;
    const w = this.win;
    if (w && typeof w.addEventListener === 'function') {
      w.addEventListener('online', this.onOnline);
      w.addEventListener('offline', this.onOffline);
    }
    const d = this.doc;
    if (d && typeof d.addEventListener === 'function') d.addEventListener('visibilitychange', this.onVisibility);
  }

  private detachEnvironment(): void {
    if (!this.envAttached) return;
    this.envAttached = false;
    const w = this.win;
    if (w && typeof w.removeEventListener === 'function') {
      w.removeEventListener('online', this.onOnline);
      w.removeEventListener('offline', this.onOffline);
    }
    const d = this.doc;
    if (d && typeof d.removeEventListener === 'function') d.removeEventListener('visibilitychange', this.onVisibility);
  }
}

export default PushgateClient;
