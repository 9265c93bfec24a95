/*!
 * @pushgate/client: WebSocket client SDK for the pushgate push gateway.
 * A single self-contained ES module without imports or runtime dependencies:
 * it runs in browsers (global WebSocket) and in Node (pass a WebSocket constructor).
 * Wire contract: SPEC.md sections 3, 4 and 6. Notes for mobile clients: PROTOCOL.md.
 */
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
export type ErrorCode = 'bad_frame' | 'unknown_type' | 'forbidden' | 'invalid_channel' | 'too_many_channels' | 'rate_limited';
/** A client frame was refused; the session stays open. */
export interface ErrorFrame {
    type: 'error';
    code: ErrorCode | (string & {});
    message: string;
    id?: string;
}
export type ServerFrame<TData = unknown> = WelcomeFrame | MessageFrame<TData> | SubscribedFrame | UnsubscribedFrame | PongFrame | GapFrame | ReconnectFrame | ErrorFrame;
export type ClientFrame = {
    type: 'subscribe';
    channel: string;
    token?: string;
    id?: string;
} | {
    type: 'unsubscribe';
    channel: string;
    id?: string;
} | {
    type: 'ack';
    seq: number;
} | {
    type: 'ping';
    id?: string;
};
/** WebSocket close codes used by pushgate (SPEC §4), plus 1006 for a connection lost without a close frame. */
export declare const CloseCode: {
    readonly NORMAL: 1000;
    readonly GOING_AWAY: 1001;
    readonly ABNORMAL: 1006;
    readonly POLICY: 1008;
    readonly TOO_LARGE: 1009;
    readonly INTERNAL_ERROR: 1011;
    readonly RESTARTING: 1012;
    readonly OVERLOADED: 1013;
    readonly ADMIN_DISCONNECT: 4000;
    readonly SLOW_CONSUMER: 4001;
    readonly HEARTBEAT_TIMEOUT: 4002;
    readonly RATE_LIMITED: 4008;
};
export type Listener<T> = (payload: T) => void;
/**
 * A tiny typed event emitter. Listeners run synchronously in registration order;
 * a listener that throws does not stop the others (see `onListenerError`).
 */
export declare class TypedEmitter<M> {
    private readonly listenerMap;
    /** Adds a listener; returns a function that removes it. */
    on<K extends keyof M>(event: K, listener: Listener<M[K]>): () => void;
    /** Adds a listener that is removed after its first call (remove it early with the returned function). */
    once<K extends keyof M>(event: K, listener: Listener<M[K]>): () => void;
    /** Removes a listener (or every listener of `event` when `listener` is omitted). */
    off<K extends keyof M>(event: K, listener?: Listener<M[K]>): void;
    listenerCount<K extends keyof M>(event: K): number;
    protected emit<K extends keyof M>(event: K, payload: M[K]): void;
    /** Called when a listener throws. The default reports it on the console. */
    protected onListenerError(err: unknown, event: keyof M): void;
}
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
    navigator?: {
        onLine?: boolean;
    };
}
/** Something that emits `visibilitychange` (a browser `document`). */
export interface VisibilityTarget {
    addEventListener(type: string, listener: () => void): void;
    removeEventListener(type: string, listener: () => void): void;
    visibilityState?: string;
}
export type TokenSource = () => string | Promise<string>;
export type ChannelTokenSource = (channel: string) => string | undefined | null | Promise<string | undefined | null>;
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
    open: {
        url: string;
    };
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
    frame: {
        type: string;
        [field: string]: unknown;
    };
    /** Local failures: token callbacks, unparseable frames, throwing listeners. */
    clientError: ClientErrorInfo;
}
/** Errors from the client: `code` is a server error code (`forbidden`, ...) or `timeout`, `closed`, `not_connected`, `unsubscribed`, `disconnected`. */
export declare class PushgateError extends Error {
    readonly code: string;
    readonly frame?: ErrorFrame;
    readonly closeCode?: number;
    constructor(code: string, message: string, extra?: {
        frame?: ErrorFrame;
        closeCode?: number;
    });
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
export declare class PushgateClient<TData = unknown> extends TypedEmitter<PushgateEventMap<TData>> {
    private readonly opts;
    private readonly Ctor;
    private readonly random;
    private readonly now;
    private readonly win;
    private readonly doc;
    private ws;
    /** Bumped for every connection attempt and on close(); stale callbacks compare against it. */
    private generation;
    private stateValue;
    private welcomeFrame;
    private welcomeAt;
    private framesReceived;
    private attempt;
    private reconnectTimer;
    private reconnectKind;
    private waitingForNetwork;
    private drainDeadline;
    private drainTimer;
    private envAttached;
    private connectWaiters;
    private highestSeq;
    /** The last_seq sent on the current connection (null: none). */
    private resumeSent;
    /** Highest seq this session may ack: max(welcome.last_seq, highest seq received on it). */
    private sessionMaxSeq;
    private handledSeq;
    private ackedSeqValue;
    private pendingAcks;
    private ackTimer;
    private duplicates;
    private readonly subs;
    private readonly pending;
    private idCounter;
    constructor(options: PushgateOptions);
    get state(): ConnectionState;
    /** The current session's `welcome`, or null when not connected. */
    get session(): WelcomeFrame | null;
    /** Highest durable `seq` received (the resume cursor sent as `last_seq`), or null if none yet. */
    get lastSeq(): number | null;
    /** Highest `seq` acknowledged to the server (or known acked by it). */
    get ackedSeq(): number;
    /** Duplicate durable messages dropped so far. */
    get duplicatesDropped(): number;
    /** Channels the client wants to be subscribed to (confirmed or not). */
    get channels(): string[];
    /** Whether the server confirmed the subscription on the current session. */
    isSubscribed(channel: string): boolean;
    /**
     * Connects (no-op when already connecting or open). Resolves with the first `welcome`;
     * transient failures are retried per the reconnect rules. Rejects when the client
     * ends in `closed` first (close(), 4000, 1008, reconnect disabled, attempts exhausted).
     */
    connect(): Promise<WelcomeFrame>;
    /**
     * Closes deliberately: flushes the pending ack, closes the socket and stops reconnecting.
     * Subscriptions are kept, so a later `connect()` restores them.
     */
    close(code?: number, reason?: string): void;
    /**
     * Sends an application-level ping. Resolves with the round trip in ms when the `pong`
     * arrives. If no frame at all arrives within `pingTimeoutMs`, the socket is considered
     * dead: it is dropped and the client reconnects (the promise rejects with `timeout`).
     */
    ping(): Promise<number>;
    /**
     * Subscribes to a channel. The subscription survives reconnects (it is re-sent after every
     * `welcome`). Resolves on `subscribed`; rejects on a matching `error` frame (the channel is
     * then forgotten), on `unsubscribe()` or `close()` before confirmation, or on timeout.
     */
    subscribe(channel: string, options?: SubscribeOptions): Promise<void>;
    /**
     * Unsubscribes and forgets the channel. Resolves on `unsubscribed` (or at once when not
     * connected, or when the connection drops first); rejects on a matching `error` frame.
     */
    unsubscribe(channel: string): Promise<void>;
    /**
     * Marks durable messages up to `seq` (default: the highest received) as handled. Acks are
     * cumulative and batched (`ackBatchSize` / `ackIntervalMs`). With `autoAck` (the default)
     * the client does this itself after the `message` listeners ran.
     */
    ack(seq?: number): void;
    /** Sends the pending cumulative ack now (if connected). Returns whether an ack was sent. */
    flushAck(): boolean;
    protected onListenerError(err: unknown, event: keyof PushgateEventMap<TData>): void;
    private setState;
    private openSocket;
    private tokenFailed;
    private createSocket;
    private buildUrl;
    private detach;
    /** Closes and forgets the current socket without waiting for its close event. */
    private teardownSocket;
    /** Client-side decision to drop a live socket (liveness timeout, drain); then reconnect. */
    private dropSocket;
    /** A connection (attempt) ended: clean up the session, then reconnect or finish. */
    private handleClosed;
    /** Per-session cleanup shared by every way a connection ends. */
    private endSession;
    private planReconnect;
    /** Full jitter: random in [0, min(max, base * 2^attempt)). */
    private backoff;
    private scheduleReconnect;
    private clearReconnectTimer;
    /** The client ends in `closed`. */
    private finish;
    private nextId;
    private send;
    private request;
    private onData;
    private onWelcome;
    private onMessage;
    private onSubscribed;
    private onReply;
    private onReconnectFrame;
    private onError;
    private sendSubscribe;
    /** The subscription is refused: forget it and reject its waiters. */
    private failSubscription;
    private clearTimer;
    private markHandled;
    private clearAckTimer;
    private clearDrainTimer;
    private readonly onOnline;
    private readonly onOffline;
    private readonly onVisibility;
    private probe;
    private isOnline;
    private attachEnvironment;
    private detachEnvironment;
}
export default PushgateClient;
