/*!
 * @pushgate/client: WebSocket client SDK for the pushgate push gateway.
 * A single self-contained ES module without imports or runtime dependencies:
 * it runs in browsers (global WebSocket) and in Node (pass a WebSocket constructor).
 * Wire contract: SPEC.md sections 3, 4 and 6. Notes for mobile clients: PROTOCOL.md.
 */
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
};
/**
 * A tiny typed event emitter. Listeners run synchronously in registration order;
 * a listener that throws does not stop the others (see `onListenerError`).
 */
export class TypedEmitter {
    constructor() {
        this.listenerMap = Object.create(null);
    }
    /** Adds a listener; returns a function that removes it. */
    on(event, listener) {
        const list = this.listenerMap[event] || (this.listenerMap[event] = []);
        list.push(listener);
        return () => this.off(event, listener);
    }
    /** Adds a listener that is removed after its first call (remove it early with the returned function). */
    once(event, listener) {
        const off = this.on(event, (payload) => {
            off();
            listener(payload);
        });
        return off;
    }
    /** Removes a listener (or every listener of `event` when `listener` is omitted). */
    off(event, listener) {
        const list = this.listenerMap[event];
        if (!list)
            return;
        if (!listener) {
            delete this.listenerMap[event];
            return;
        }
        const i = list.indexOf(listener);
        if (i >= 0)
            list.splice(i, 1);
    }
    listenerCount(event) {
        const list = this.listenerMap[event];
        return list ? list.length : 0;
    }
    emit(event, payload) {
        const list = this.listenerMap[event];
        if (!list || list.length === 0)
            return;
        for (const listener of list.slice()) {
            try {
                listener(payload);
            }
            catch (err) {
                this.onListenerError(err, event);
            }
        }
    }
    /** Called when a listener throws. The default reports it on the console. */
    onListenerError(err, event) {
        const c = globalThis.console;
        if (c && c.error)
            c.error('pushgate: listener for "' + String(event) + '" threw', err);
    }
}
/** Errors from the client: `code` is a server error code (`forbidden`, ...) or `timeout`, `closed`, `not_connected`, `unsubscribed`, `disconnected`. */
export class PushgateError extends Error {
    constructor(code, message, extra) {
        super(message);
        this.name = 'PushgateError';
        this.code = code;
        if (extra && extra.frame)
            this.frame = extra.frame;
        if (extra && extra.closeCode !== undefined)
            this.closeCode = extra.closeCode;
    }
}
const OPEN = 1;
function isThenable(v) {
    return !!v && typeof v.then === 'function';
}
function errorMessage(err) {
    return err instanceof Error ? err.message : String(err);
}
function optNumber(v, dflt, min = 0) {
    return typeof v === 'number' && !isNaN(v) && v >= min ? v : dflt;
}
function noop() {
    /* detached socket handler */
}
/**
 * Marks a returned promise as handled, so that callers may ignore it without an
 * unhandled-rejection warning; awaiting it still throws. Failures are also events.
 */
function quiet(p) {
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
export class PushgateClient extends TypedEmitter {
    constructor(options) {
        super();
        this.ws = null;
        /** Bumped for every connection attempt and on close(); stale callbacks compare against it. */
        this.generation = 0;
        this.stateValue = 'idle';
        this.welcomeFrame = null;
        this.welcomeAt = null;
        this.framesReceived = 0;
        // reconnect
        this.attempt = 0;
        this.reconnectTimer = null;
        this.reconnectKind = null;
        this.waitingForNetwork = false;
        this.drainDeadline = null;
        this.drainTimer = null;
        this.envAttached = false;
        this.connectWaiters = [];
        /** The last_seq sent on the current connection (null: none). */
        this.resumeSent = null;
        /** Highest seq this session may ack: max(welcome.last_seq, highest seq received on it). */
        this.sessionMaxSeq = 0;
        this.handledSeq = 0;
        this.ackedSeqValue = 0;
        this.pendingAcks = 0;
        this.ackTimer = null;
        this.duplicates = 0;
        // requests
        this.subs = new Map();
        this.pending = new Map();
        this.idCounter = 0;
        // -------------------------------------------------------------------------
        // internals: browser environment (guarded, so Node works without it)
        // -------------------------------------------------------------------------
        this.onOnline = () => {
            this.emit('online', undefined);
            if (this.stateValue === 'open') {
                this.probe();
            }
            else if (this.stateValue === 'reconnecting') {
                // Network is back: do not sit out a backoff that was caused by the network.
                if (this.waitingForNetwork || this.reconnectKind === 'backoff') {
                    this.clearReconnectTimer();
                    this.openSocket();
                }
            }
        };
        this.onOffline = () => {
            this.emit('offline', undefined);
        };
        this.onVisibility = () => {
            const d = this.doc;
            if (!d)
                return;
            if (d.visibilityState === 'visible') {
                if (this.stateValue === 'open')
                    this.probe();
            }
            else if (d.visibilityState === 'hidden') {
                this.flushAck(); // the page may be frozen or discarded from here on
            }
        };
        if (!options || typeof options.url !== 'string' || !options.url) {
            throw new TypeError('PushgateClient: options.url is required');
        }
        this.opts = options;
        const g = globalThis;
        this.Ctor = options.WebSocket || g.WebSocket;
        this.random = options.random || Math.random;
        this.now = options.now || (() => Date.now());
        this.win =
            options.window !== undefined
                ? options.window
                : typeof g.addEventListener === 'function'
                    ? g
                    : null;
        this.doc = options.document !== undefined ? options.document : g.document || null;
        this.highestSeq =
            typeof options.lastSeq === 'number' && options.lastSeq >= 0 ? Math.floor(options.lastSeq) : null;
    }
    // ----- getters -----
    get state() {
        return this.stateValue;
    }
    /** The current session's `welcome`, or null when not connected. */
    get session() {
        return this.stateValue === 'open' ? this.welcomeFrame : null;
    }
    /** Highest durable `seq` received (the resume cursor sent as `last_seq`), or null if none yet. */
    get lastSeq() {
        return this.highestSeq;
    }
    /** Highest `seq` acknowledged to the server (or known acked by it). */
    get ackedSeq() {
        return this.ackedSeqValue;
    }
    /** Duplicate durable messages dropped so far. */
    get duplicatesDropped() {
        return this.duplicates;
    }
    /** Channels the client wants to be subscribed to (confirmed or not). */
    get channels() {
        return Array.from(this.subs.keys());
    }
    /** Whether the server confirmed the subscription on the current session. */
    isSubscribed(channel) {
        const s = this.subs.get(channel);
        return !!s && s.confirmed && this.stateValue === 'open';
    }
    // ----- lifecycle -----
    /**
     * Connects (no-op when already connecting or open). Resolves with the first `welcome`;
     * transient failures are retried per the reconnect rules. Rejects when the client
     * ends in `closed` first (close(), 4000, 1008, reconnect disabled, attempts exhausted).
     */
    connect() {
        if (this.stateValue === 'open' && this.welcomeFrame)
            return Promise.resolve(this.welcomeFrame);
        const p = quiet(new Promise((resolve, reject) => this.connectWaiters.push({ resolve, reject })));
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
    close(code = CloseCode.NORMAL, reason = 'client closed') {
        if (this.stateValue === 'idle' || this.stateValue === 'closed')
            return;
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
    ping() {
        const ws = this.ws;
        if (this.stateValue !== 'open' || !ws) {
            return Promise.reject(new PushgateError('not_connected', 'not connected'));
        }
        const id = this.nextId();
        const sentAt = this.now();
        const framesAtSend = this.framesReceived;
        return quiet(new Promise((resolve, reject) => {
            const req = {
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
    subscribe(channel, options = {}) {
        if (typeof channel !== 'string' || channel.length === 0) {
            return Promise.reject(new TypeError('subscribe: channel must be a non-empty string'));
        }
        let sub = this.subs.get(channel);
        if (!sub) {
            sub = { channel, confirmed: false, sentGen: -1, reqId: null, timer: null, waiters: [] };
            this.subs.set(channel, sub);
        }
        if (options.token !== undefined)
            sub.token = options.token;
        if (options.getToken)
            sub.getToken = options.getToken;
        if (sub.confirmed && this.stateValue === 'open')
            return Promise.resolve();
        const s = sub;
        const p = quiet(new Promise((resolve, reject) => s.waiters.push({ resolve, reject })));
        if (this.stateValue === 'open' && s.sentGen !== this.generation)
            this.sendSubscribe(s);
        return p;
    }
    /**
     * Unsubscribes and forgets the channel. Resolves on `unsubscribed` (or at once when not
     * connected, or when the connection drops first); rejects on a matching `error` frame.
     */
    unsubscribe(channel) {
        const sub = this.subs.get(channel);
        if (!sub)
            return Promise.resolve();
        this.subs.delete(channel);
        this.clearTimer(sub);
        const waiters = sub.waiters.splice(0);
        for (const w of waiters)
            w.reject(new PushgateError('unsubscribed', 'unsubscribed before confirmation'));
        if (this.stateValue !== 'open' || sub.sentGen !== this.generation)
            return Promise.resolve();
        return this.request('unsubscribe', { type: 'unsubscribe', channel });
    }
    // ----- acks -----
    /**
     * Marks durable messages up to `seq` (default: the highest received) as handled. Acks are
     * cumulative and batched (`ackBatchSize` / `ackIntervalMs`). With `autoAck` (the default)
     * the client does this itself after the `message` listeners ran.
     */
    ack(seq) {
        if (this.highestSeq === null)
            return;
        const s = seq === undefined ? this.highestSeq : Math.min(Math.floor(seq), this.highestSeq);
        if (!(s > 0))
            return;
        this.markHandled(s);
    }
    /** Sends the pending cumulative ack now (if connected). Returns whether an ack was sent. */
    flushAck() {
        this.clearAckTimer();
        if (this.stateValue !== 'open' || !this.ws || this.ws.readyState !== OPEN)
            return false;
        const s = Math.min(this.handledSeq, this.sessionMaxSeq);
        if (s <= this.ackedSeqValue)
            return false;
        this.ackedSeqValue = s;
        this.pendingAcks = 0;
        return this.send({ type: 'ack', seq: s });
    }
    // -------------------------------------------------------------------------
    // internals: connection
    // -------------------------------------------------------------------------
    onListenerError(err, event) {
        if (event !== 'clientError' && this.listenerCount('clientError') > 0) {
            this.emit('clientError', { context: 'listener', error: err });
        }
        else {
            super.onListenerError(err, event);
        }
    }
    setState(next) {
        const previous = this.stateValue;
        if (previous === next)
            return;
        this.stateValue = next;
        this.emit('state', { state: next, previous });
    }
    openSocket() {
        const gen = ++this.generation;
        this.reconnectKind = null;
        this.waitingForNetwork = false;
        this.setState('connecting');
        this.emit('connecting', {
            attempt: this.attempt,
            url: this.buildUrl(undefined),
            lastSeq: this.highestSeq,
        });
        if (gen !== this.generation)
            return; // a listener called close()
        let token;
        try {
            token = this.opts.getToken ? this.opts.getToken() : this.opts.token;
        }
        catch (err) {
            this.tokenFailed(gen, err);
            return;
        }
        if (isThenable(token)) {
            token.then((t) => {
                if (gen === this.generation)
                    this.createSocket(gen, t);
            }, (err) => this.tokenFailed(gen, err));
        }
        else {
            this.createSocket(gen, token);
        }
    }
    tokenFailed(gen, err) {
        if (gen !== this.generation)
            return;
        this.emit('clientError', { context: 'token', error: err });
        if (gen !== this.generation)
            return;
        this.handleClosed(CloseCode.ABNORMAL, 'token fetch failed: ' + errorMessage(err), false);
    }
    createSocket(gen, token) {
        const Ctor = this.Ctor;
        this.resumeSent = this.highestSeq;
        let ws;
        let url;
        try {
            if (!Ctor)
                throw new Error('no WebSocket implementation: pass options.WebSocket');
            url = this.buildUrl(token);
            ws = new Ctor(url);
        }
        catch (err) {
            this.emit('clientError', { context: 'socket', error: err });
            if (gen === this.generation) {
                this.handleClosed(CloseCode.ABNORMAL, 'socket creation failed: ' + errorMessage(err), false);
            }
            return;
        }
        this.ws = ws;
        this.framesReceived = 0;
        ws.onopen = () => {
            if (this.ws === ws)
                this.emit('open', { url: this.buildUrl(undefined) });
        };
        ws.onmessage = (ev) => {
            if (this.ws === ws)
                this.onData(ev ? ev.data : undefined);
        };
        ws.onerror = noop; // a close event always follows
        ws.onclose = (ev) => {
            if (this.ws !== ws)
                return;
            this.ws = null;
            this.detach(ws);
            this.handleClosed(ev && typeof ev.code === 'number' ? ev.code : CloseCode.ABNORMAL, (ev && ev.reason) || '', !!(ev && ev.wasClean));
        };
    }
    buildUrl(token) {
        let base = this.opts.url;
        const loc = globalThis.location;
        if (base.charAt(0) === '/' && loc && loc.host) {
            base = (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + base;
        }
        else if (/^http/i.test(base)) {
            base = base.replace(/^http/i, 'ws');
        }
        const u = new URL(base);
        u.searchParams.delete('token');
        u.searchParams.delete('last_seq');
        if (token)
            u.searchParams.set('token', token);
        if (this.highestSeq !== null)
            u.searchParams.set('last_seq', String(this.highestSeq));
        return u.toString();
    }
    detach(ws) {
        ws.onopen = noop;
        ws.onmessage = noop;
        ws.onclose = noop;
        ws.onerror = noop;
    }
    /** Closes and forgets the current socket without waiting for its close event. */
    teardownSocket(code, reason) {
        const ws = this.ws;
        if (!ws)
            return;
        this.ws = null;
        this.detach(ws);
        try {
            ws.close(code >= 3000 && code <= 4999 ? code : CloseCode.NORMAL, reason.slice(0, 120));
        }
        catch {
            /* already closing or never opened */
        }
    }
    /** Client-side decision to drop a live socket (liveness timeout, drain); then reconnect. */
    dropSocket(code, reason, wasClean) {
        this.teardownSocket(CloseCode.NORMAL, reason);
        this.handleClosed(code, reason, wasClean);
    }
    /** A connection (attempt) ended: clean up the session, then reconnect or finish. */
    handleClosed(code, reason, wasClean) {
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
    endSession() {
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
            if (req.timer !== null)
                clearTimeout(req.timer);
            // The session is gone, and with it its server-side subscriptions.
            if (req.kind === 'unsubscribe')
                req.resolve();
            else
                req.reject(new PushgateError('disconnected', 'connection closed'));
        }
    }
    planReconnect(code) {
        const drainDeadline = this.drainDeadline;
        this.drainDeadline = null;
        if (this.opts.reconnect === false)
            return null;
        if (code === CloseCode.ADMIN_DISCONNECT || code === CloseCode.POLICY)
            return null;
        if (drainDeadline !== null) {
            return { delayMs: Math.max(0, drainDeadline - this.now()), kind: 'drain' };
        }
        if (code === CloseCode.RESTARTING) {
            return { delayMs: Math.floor(this.random() * optNumber(this.opts.quickReconnectMaxMs, 1000)), kind: 'quick' };
        }
        const max = optNumber(this.opts.maxReconnectAttempts, Infinity);
        if (this.attempt >= max)
            return null;
        const jitter = this.backoff(this.attempt++);
        if (code === CloseCode.OVERLOADED) {
            return { delayMs: optNumber(this.opts.overloadedDelayMs, 10000) + jitter, kind: 'overloaded' };
        }
        return { delayMs: jitter, kind: 'backoff' };
    }
    /** Full jitter: random in [0, min(max, base * 2^attempt)). */
    backoff(attempt) {
        const base = optNumber(this.opts.backoffBaseMs, 500);
        const max = optNumber(this.opts.backoffMaxMs, 30000);
        const cap = Math.min(max, base * Math.pow(2, Math.min(attempt, 30)));
        return Math.floor(this.random() * cap);
    }
    scheduleReconnect(plan) {
        this.clearReconnectTimer();
        this.reconnectKind = plan.kind;
        const gen = this.generation;
        this.reconnectTimer = setTimeout(() => {
            this.reconnectTimer = null;
            if (gen !== this.generation || this.stateValue !== 'reconnecting')
                return;
            if (!this.isOnline()) {
                this.waitingForNetwork = true; // resumed by the `online` event
                return;
            }
            this.openSocket();
        }, plan.delayMs);
        this.setState('reconnecting');
    }
    clearReconnectTimer() {
        if (this.reconnectTimer !== null)
            clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
    }
    /** The client ends in `closed`. */
    finish(info) {
        this.endSession();
        this.clearReconnectTimer();
        this.reconnectKind = null;
        this.waitingForNetwork = false;
        this.detachEnvironment();
        // Collect waiters before any listener runs: a listener may call connect() again.
        const subWaiters = [];
        for (const sub of this.subs.values())
            subWaiters.push(...sub.waiters.splice(0));
        const connectWaiters = this.connectWaiters.splice(0);
        const err = new PushgateError('closed', 'connection closed (' + info.code + (info.reason ? ' ' + info.reason : '') + ')', { closeCode: info.code });
        for (const w of subWaiters)
            w.reject(err);
        for (const w of connectWaiters)
            w.reject(err);
        this.setState('closed');
        this.emit('close', info);
    }
    // -------------------------------------------------------------------------
    // internals: frames
    // -------------------------------------------------------------------------
    nextId() {
        this.idCounter = (this.idCounter + 1) % 1e15;
        return 'c' + this.idCounter;
    }
    send(frame) {
        const ws = this.ws;
        if (!ws || ws.readyState !== OPEN)
            return false;
        try {
            ws.send(JSON.stringify(frame));
            return true;
        }
        catch (err) {
            this.emit('clientError', { context: 'socket', error: err });
            return false;
        }
    }
    request(kind, frame) {
        const id = this.nextId();
        return quiet(new Promise((resolve, reject) => {
            const req = { kind, resolve, reject, timer: null };
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
    onData(data) {
        if (typeof data !== 'string') {
            this.emit('clientError', { context: 'frame', error: new Error('non-text frame ignored') });
            return;
        }
        let f;
        try {
            f = JSON.parse(data);
        }
        catch (err) {
            this.emit('clientError', { context: 'frame', error: err });
            return;
        }
        if (!f || typeof f !== 'object' || typeof f.type !== 'string') {
            this.emit('clientError', { context: 'frame', error: new Error('frame without a type') });
            return;
        }
        this.framesReceived++;
        this.emit('frame', f);
        const frame = f;
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
    onWelcome(f) {
        this.welcomeFrame = f;
        this.welcomeAt = this.now();
        const cursor = typeof f.last_seq === 'number' && f.last_seq >= 0 ? f.last_seq : null;
        if (cursor !== null) {
            if (this.resumeSent === null) {
                // Without last_seq the cursor is what this device (or user) already acked (SPEC §6).
                if (cursor > this.ackedSeqValue)
                    this.ackedSeqValue = cursor;
                if (cursor > this.handledSeq)
                    this.handledSeq = cursor;
            }
            if (this.highestSeq === null || cursor > this.highestSeq)
                this.highestSeq = cursor;
            this.sessionMaxSeq = cursor;
        }
        else {
            this.sessionMaxSeq = this.resumeSent !== null ? this.resumeSent : 0;
        }
        const gen = this.generation;
        this.setState('open');
        if (gen !== this.generation)
            return; // a listener called close()
        for (const sub of Array.from(this.subs.values())) {
            if (sub.sentGen !== gen)
                this.sendSubscribe(sub);
        }
        if (this.handledSeq > this.ackedSeqValue)
            this.flushAck();
        const waiters = this.connectWaiters.splice(0);
        for (const w of waiters)
            w.resolve(f);
        this.emit('welcome', f);
    }
    onMessage(f) {
        const seq = typeof f.seq === 'number' ? f.seq : null;
        if (seq !== null) {
            if (this.highestSeq !== null && seq <= this.highestSeq) {
                this.duplicates++;
                return;
            }
            this.highestSeq = seq;
            if (seq > this.sessionMaxSeq)
                this.sessionMaxSeq = seq;
        }
        this.emit('message', f);
        if (seq !== null && this.opts.autoAck !== false)
            this.markHandled(seq);
    }
    onSubscribed(f) {
        let sub;
        if (f.id !== undefined) {
            for (const s of this.subs.values()) {
                if (s.reqId === f.id) {
                    sub = s;
                    break;
                }
            }
        }
        else {
            sub = this.subs.get(f.channel);
        }
        if (sub) {
            this.clearTimer(sub);
            sub.reqId = null;
            sub.confirmed = true;
            const waiters = sub.waiters.splice(0);
            for (const w of waiters)
                w.resolve();
        }
        this.emit('subscribed', f);
    }
    onReply(f, event) {
        if (f.id !== undefined) {
            const req = this.pending.get(f.id);
            if (req && req.kind === (event === 'pong' ? 'ping' : 'unsubscribe')) {
                this.pending.delete(f.id);
                if (req.timer !== null)
                    clearTimeout(req.timer);
                req.resolve();
            }
        }
        if (event === 'pong')
            this.emit('pong', f);
        else
            this.emit('unsubscribed', f);
    }
    onReconnectFrame(f) {
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
    onError(f) {
        if (f.id !== undefined) {
            const err = new PushgateError(String(f.code), f.message || String(f.code), { frame: f });
            const req = this.pending.get(f.id);
            if (req) {
                this.pending.delete(f.id);
                if (req.timer !== null)
                    clearTimeout(req.timer);
                req.reject(err);
            }
            else {
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
    sendSubscribe(sub) {
        const gen = this.generation;
        const id = this.nextId();
        sub.sentGen = gen;
        sub.reqId = id;
        sub.confirmed = false;
        const go = (token) => {
            if (gen !== this.generation || this.subs.get(sub.channel) !== sub || sub.reqId !== id)
                return;
            const frame = token
                ? { type: 'subscribe', channel: sub.channel, token, id }
                : { type: 'subscribe', channel: sub.channel, id };
            this.clearTimer(sub);
            const timeout = optNumber(this.opts.requestTimeoutMs, 10000);
            if (timeout > 0) {
                sub.timer = setTimeout(() => {
                    sub.timer = null;
                    if (sub.reqId !== id)
                        return;
                    this.failSubscription(sub, new PushgateError('timeout', 'subscribe ' + sub.channel + ' timed out'), true);
                    if (this.stateValue === 'open')
                        this.send({ type: 'unsubscribe', channel: sub.channel });
                }, timeout);
            }
            this.send(frame);
        };
        const fail = (err) => {
            if (gen !== this.generation || this.subs.get(sub.channel) !== sub || sub.reqId !== id)
                return;
            this.failSubscription(sub, err instanceof Error ? err : new Error('channel token: ' + String(err)), true);
        };
        let token;
        try {
            const source = sub.getToken || (sub.token === undefined ? this.opts.getChannelToken : undefined);
            token = source ? source(sub.channel) : sub.token;
        }
        catch (err) {
            fail(err);
            return;
        }
        if (isThenable(token))
            token.then(go, fail);
        else
            go(token);
    }
    /** The subscription is refused: forget it and reject its waiters. */
    failSubscription(sub, err, report) {
        this.clearTimer(sub);
        sub.reqId = null;
        if (this.subs.get(sub.channel) === sub)
            this.subs.delete(sub.channel);
        const waiters = sub.waiters.splice(0);
        for (const w of waiters)
            w.reject(err);
        if (report)
            this.emit('clientError', { context: 'subscribe', error: err, channel: sub.channel });
    }
    clearTimer(sub) {
        if (sub.timer !== null)
            clearTimeout(sub.timer);
        sub.timer = null;
    }
    markHandled(seq) {
        if (seq <= this.handledSeq)
            return;
        // seqs are consecutive per user, so the distance is the number of newly handled messages
        // (an over-estimate after a resume only makes the next ack come earlier).
        this.pendingAcks += seq - this.handledSeq;
        this.handledSeq = seq;
        if (this.pendingAcks >= optNumber(this.opts.ackBatchSize, 20, 1)) {
            this.flushAck();
        }
        else if (this.ackTimer === null && this.stateValue === 'open') {
            this.ackTimer = setTimeout(() => {
                this.ackTimer = null;
                this.flushAck();
            }, optNumber(this.opts.ackIntervalMs, 1000));
        }
    }
    clearAckTimer() {
        if (this.ackTimer !== null)
            clearTimeout(this.ackTimer);
        this.ackTimer = null;
    }
    clearDrainTimer() {
        if (this.drainTimer !== null)
            clearTimeout(this.drainTimer);
        this.drainTimer = null;
    }
    probe() {
        this.ping().catch(noop);
    }
    isOnline() {
        const nav = this.win ? this.win.navigator : undefined;
        return !(nav && nav.onLine === false);
    }
    attachEnvironment() {
        if (this.envAttached)
            return;
        this.envAttached = true;
        const w = this.win;
        if (w && typeof w.addEventListener === 'function') {
            w.addEventListener('online', this.onOnline);
            w.addEventListener('offline', this.onOffline);
        }
        const d = this.doc;
        if (d && typeof d.addEventListener === 'function')
            d.addEventListener('visibilitychange', this.onVisibility);
    }
    detachEnvironment() {
        if (!this.envAttached)
            return;
        this.envAttached = false;
        const w = this.win;
        if (w && typeof w.removeEventListener === 'function') {
            w.removeEventListener('online', this.onOnline);
            w.removeEventListener('offline', this.onOffline);
        }
        const d = this.doc;
        if (d && typeof d.removeEventListener === 'function')
            d.removeEventListener('visibilitychange', this.onVisibility);
    }
}
export default PushgateClient;
