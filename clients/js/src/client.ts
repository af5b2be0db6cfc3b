import {
  CloseCode,
  PROTOCOL_VERSIONS,
  RETRYABLE_ERRORS,
  type Balance,
  type BalanceChanged,
  type CashierState,
  type ClientFrame,
  type Codes,
  type ErrorCode,
  type ErrorFrame,
  type History,
  type HoldState,
  type Member,
  type MemberBalance,
  type MemberMerged,
  type Notice,
  type Outcome,
  type Pass,
  type Pong,
  type Presence,
  type Profile,
  type ProfileChanged,
  type OffersChanged,
  type CodeChanged,
  type Refreshed,
  type ResultData,
  type ReturnReceipt,
  type RewardCode,
  type SaleReceipt,
  type ServerFrame,
  type Subscribed,
  type TierChanged,
  type Unsubscribed,
  type UpdateProfile,
  type VerificationSent,
  type WalletView,
  type Welcome,
} from "./frames.js";

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** A client command without its request `id` (the client assigns one per send). */
export type Command = DistributiveOmit<Exclude<ClientFrame, { type: "hello" }>, "id">;
/** Commands that carry an operation id: applied at most once per `op`. */
export type OpCommand = Extract<Command, { op: string }>;

/** The `result` data each command is answered with (the spec leaves this to the prose). */
export interface Replies {
  ping: Pong;
  refresh: Refreshed;
  subscribe: Subscribed;
  unsubscribe: Unsubscribed;
  balance: Balance;
  sale: SaleReceipt;
  reserve: HoldState;
  commit: HoldState;
  release: HoldState;
  outcome: Outcome;
  enrol: Member;
  lookup: Member;
  pass: Pass;
  history: History;
  redeem_reward: RewardCode;
  use_code: RewardCode;
  void_code: RewardCode;
  return: ReturnReceipt;
  cashier_view: CashierState;
  wallet: WalletView;
  codes: Codes;
  update_profile: Profile;
  verify_contact: VerificationSent;
  confirm_contact: Profile;
}
// A command added to the spec without a reply here fails to compile.
type Unreplied = Exclude<Command["type"], keyof Replies>;
const everyCommandHasAReply: [Unreplied] extends [never] ? true : Unreplied = true;
void everyCommandHasAReply;

export type ReplyTo<C extends Command> = Replies[C["type"]];

/** What the client needs of a WebSocket: the browser's, or `ws` in Node. (The handlers take
 *  `any` so that both implementations, whose event classes differ, fit.) */
export interface WebSocketLike {
  readonly readyState: number;
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** The gateway's websocket URL(s), e.g. `wss://gw.example.com/ws`; each reconnect tries the next. */
  url: string | readonly string[];
  /** A fresh token; called before every `hello` and before every refresh. */
  getToken: () => string | Promise<string>;
  /** Default: the global WebSocket (browsers, Node 22+); in Node 20 pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /** Sent in `hello.client`. */
  clientName?: string;
  versions?: readonly number[];
  /** Default request timeout, ms (10 000). */
  timeout?: number;
  /** Reconnect backoff bounds, ms (500 and 20 000). */
  minDelay?: number;
  maxDelay?: number;
  /** A connection up this long resets the backoff, ms (10 000). */
  stableAfter?: number;
  /** Refresh the token before it expires (true). */
  refresh?: boolean;
  /** Where `online`/`offline` events come from (default: `window`, when there is one). */
  network?: EventTarget | null;
}

/** A change of a member's known balance: `reason` says what moved it. */
export interface BalanceEvent {
  member: string;
  balance: MemberBalance;
  /** `change`: a push; `missed`: replayed on resume; `reply`: a command's reply was newer;
   *  `resync`: the server's truth after changes were lost (a `resync` event comes too). */
  reason: "change" | "missed" | "reply" | "resync";
  change?: BalanceChanged;
}

export interface ClientEvents {
  connect: Welcome;
  disconnect: { code: number; reason: string; reconnect: boolean };
  closed: { code: number; reason: string };
  balance: BalanceEvent;
  resync: { member: string; balance: MemberBalance; reason: string };
  wallet: WalletView;
  tier_changed: TierChanged;
  code_changed: CodeChanged;
  profile_changed: ProfileChanged;
  offers_changed: OffersChanged;
  merged: MemberMerged;
  presence: Presence;
  notice: Notice;
  token: { expiresAt: number };
  error: GatewayError;
  frame: ServerFrame;
}

export type ClientErrorCode = ErrorCode | "request_timeout" | "connection_lost" | "closed";

/** A refused command (`code` from the server), or one the client gave up on. `command` is
 *  what was sent (with its `op`): `client.request(err.command)` retries it. */
export class GatewayError extends Error {
  readonly code: ClientErrorCode | string;
  readonly retryable: boolean;
  readonly command?: Command;
  readonly op?: string;
  constructor(code: string, message: string, retryable: boolean, command?: Command) {
    super(message);
    this.name = "GatewayError";
    this.code = code;
    this.retryable = retryable;
    this.command = command;
    if (command && "op" in command) this.op = command.op;
  }
}

type MemberEvent = TierChanged | CodeChanged | ProfileChanged | OffersChanged | MemberMerged;

interface Pending {
  command: Command;
  resolve(data: ResultData): void;
  reject(err: GatewayError): void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
  /** Rebuilt on every send (a subscribe's `since` must be the latest version). */
  build?: () => Command;
  /** Runs once the request settles, whichever way (with the reply's data, if any). */
  done?: (data?: ResultData) => void;
}

interface Watch {
  member: string;
  presence: boolean;
  subscribing: boolean;
  /** Pushes ahead of a missing version, until the resubscribe fills the gap. */
  held: Map<number, BalanceChanged>;
  wallet?: {
    history?: number;
    view?: WalletView;
    seq: number | null;
    fetching: number;
    /** Fetches sent, and the last whose reply became the view: a later fetch's reply wins. */
    asked: number;
    shown: number;
    queue: MemberEvent[];
  };
}

// Reads and idempotent writes are sent again after a reconnect (a confirm_contact sent again
// with its code answers as the first did); these are not (a code sent twice is a second code;
// pings and refreshes belong to a session).
const NOT_RESENT = new Set(["verify_contact", "ping", "refresh"]);
const MEMBER_EVENTS = new Set([
  "tier_changed",
  "code_changed",
  "profile_changed",
  "offers_changed",
  "merged",
]);

const noop = (): void => {};

/** The jittered exponential backoff of centrifuge-js: `min` plus up to min*2^step, capped. */
export function backoff(step: number, min: number, max: number, random = Math.random): number {
  return Math.min(max, min + random() * Math.min(max, min * 2 ** Math.min(step, 31)));
}

/** Whether to reconnect after close `code` (3501 too: with a new token). */
export function shouldReconnect(code: number): boolean {
  return code === CloseCode.TOKEN_EXPIRED || code < 3500 || code > 3999;
}

/** A JWT's `exp` in ms (the token is not verified: only the server can). */
export function tokenExpiry(token: string): number | null {
  try {
    const body = token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/");
    const exp = (JSON.parse(atob(body)) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

function newOp(): string {
  const c = globalThis.crypto;
  return (
    "js-" + (c?.randomUUID ? c.randomUUID() : Math.random().toString(36).slice(2) + Date.now().toString(36))
  );
}

export class Client {
  private readonly o: Required<Omit<ClientOptions, "WebSocket" | "network" | "clientName">> & ClientOptions;
  private readonly urls: readonly string[];
  private readonly WS: WebSocketConstructor;
  private readonly listeners = new Map<string, Set<(e: never) => void>>();
  private readonly pending = new Map<string, Pending>();
  private readonly watches = new Map<string, Watch>();
  private readonly balances = new Map<string, MemberBalance>();
  private ws: WebSocketLike | null = null;
  private hello = "";
  private token = "";
  private n = 0;
  private attempt = 0;
  private opening = 0;
  private urlIndex = 0;
  private state: "idle" | "connecting" | "open" | "paused" | "closed" = "idle";
  private lastFrame = 0;
  private pinging = false;
  private timers: Partial<
    Record<"retry" | "live" | "stable" | "refresh" | "connect", ReturnType<typeof setTimeout>>
  > = {};
  private waiters: { resolve(w: Welcome): void; reject(e: GatewayError): void }[] = [];
  private readonly online = (): void => this.resume();
  private readonly offline = (): void => this.pause();
  /** The current session's `welcome`, while connected. */
  welcome: Welcome | null = null;

  constructor(options: ClientOptions) {
    this.o = {
      versions: PROTOCOL_VERSIONS,
      timeout: 10_000,
      minDelay: 500,
      maxDelay: 20_000,
      stableAfter: 10_000,
      refresh: true,
      ...options,
    };
    this.urls = typeof options.url === "string" ? [options.url] : options.url;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new Error("no WebSocket: pass options.WebSocket (e.g. the ws package's)");
    this.WS = WS;
  }

  // ------------------------------------------------------------------ events

  /** Listen to `type`; returns a function that stops listening. */
  on<K extends keyof ClientEvents>(type: K, fn: (e: ClientEvents[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn as (e: never) => void);
    return () => set.delete(fn as (e: never) => void);
  }

  private emit<K extends keyof ClientEvents>(type: K, e: ClientEvents[K]): void {
    for (const fn of [...(this.listeners.get(type) ?? [])]) {
      try {
        (fn as (e: ClientEvents[K]) => void)(e);
      } catch (err) {
        // A listener's bug must not break the client's bookkeeping: report it on its own.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  // ------------------------------------------------------------------ connection

  /** Connect (and keep reconnecting); resolves with the first `welcome`. */
  connect(): Promise<Welcome> {
    if (this.welcome) return Promise.resolve(this.welcome);
    const p = new Promise<Welcome>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.state === "idle" || this.state === "closed") {
      const net =
        this.o.network !== undefined ? this.o.network : (globalThis as { window?: EventTarget }).window;
      net?.addEventListener("online", this.online);
      net?.addEventListener("offline", this.offline);
      this.attempt = 0;
      void this.open();
    }
    return p;
  }

  /** Close for good: pending requests fail with `closed`. */
  close(): void {
    if (this.state === "closed") return;
    const net =
      this.o.network !== undefined ? this.o.network : (globalThis as { window?: EventTarget }).window;
    net?.removeEventListener("online", this.online);
    net?.removeEventListener("offline", this.offline);
    this.state = "closed";
    this.drop(1000, "closed by the client");
  }

  /** Disconnect until `resume()` (the browser's `offline` event calls it). Requests wait. */
  pause(): void {
    if (this.state === "closed" || this.state === "idle") return;
    this.state = "paused";
    this.drop(1000, "paused");
  }

  /** Reconnect now after `pause()` (the browser's `online` event calls it). */
  resume(): void {
    if (this.state !== "paused") return;
    this.attempt = 0;
    void this.open();
  }

  private async open(): Promise<void> {
    this.state = "connecting";
    this.clear("retry");
    const attempt = ++this.opening;
    let token: string;
    try {
      token = await this.o.getToken();
    } catch (err) {
      this.emit("error", new GatewayError("token_invalid", `getToken failed: ${String(err)}`, true));
      return this.retry(1006);
    }
    // Paused, closed or opened again while the token came: this attempt is over.
    if (this.state !== "connecting" || attempt !== this.opening) return;
    const ws = new this.WS(this.urls[this.urlIndex++ % this.urls.length]!);
    this.ws = ws;
    this.token = token;
    this.hello = `h${++this.n}`;
    // An unanswered connect or hello (a black-holed host) counts as a lost connection.
    this.timers.connect = setTimeout(() => this.drop(1006, "connect timeout"), this.o.timeout);
    ws.onopen = () => {
      const v = this.o.versions;
      ws.send(
        JSON.stringify({
          type: "hello",
          id: this.hello,
          versions: v,
          token,
          ...(this.o.clientName ? { client: this.o.clientName } : {}),
        }),
      );
    };
    ws.onmessage = (ev: { data: unknown }) => this.receive(ev.data);
    ws.onclose = (ev: { code: number; reason: string }) => this.lost(ws, ev.code, ev.reason);
    ws.onerror = noop; // onclose follows with the code
  }

  /** Leave the socket without waiting for its close handshake (a frozen server never answers). */
  private drop(code: number, reason: string): void {
    const ws = this.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = noop;
      try {
        const t = (ws as { terminate?: () => void }).terminate;
        if (code !== 1000 && t) t.call(ws);
        else ws.close(code === 1000 ? 1000 : 4000, reason);
      } catch {
        /* already closed */
      }
    }
    this.lost(ws, code, reason);
  }

  private lost(ws: WebSocketLike | null, code: number, reason: string): void {
    if (ws !== this.ws) return;
    this.ws = null;
    this.welcome = null;
    this.pinging = false;
    const stopped = this.state === "closed" || this.state === "paused";
    for (const k of Object.keys(this.timers) as (keyof Client["timers"])[])
      if (stopped || k !== "retry") this.clear(k);
    for (const [id, p] of this.pending) {
      if (this.state === "closed")
        this.settle(id, new GatewayError("closed", "the client was closed", false, p.command));
      else if (p.sent && NOT_RESENT.has(p.command.type))
        this.settle(
          id,
          new GatewayError(
            "connection_lost",
            `connection lost (${code}) before the reply: outcome unknown`,
            false,
            p.command,
          ),
        );
      else p.sent = false;
    }
    if (stopped) {
      if (ws) this.emit("disconnect", { code, reason, reconnect: false });
      if (this.state === "closed") this.terminal(code, reason);
      return;
    }
    if (!shouldReconnect(code)) {
      this.state = "closed";
      this.emit("disconnect", { code, reason, reconnect: false });
      for (const [id, p] of this.pending)
        this.settle(id, new GatewayError("closed", `closed by the server (${code})`, false, p.command));
      return this.terminal(code, reason);
    }
    this.emit("disconnect", { code, reason, reconnect: true });
    if (this.state === "connecting" || this.state === "open") this.retry(code); // unless a listener closed or paused
  }

  private terminal(code: number, reason: string): void {
    const err = new GatewayError("closed", `closed (${code}${reason ? ": " + reason : ""})`, false);
    for (const w of this.waiters.splice(0)) w.reject(err);
    this.emit("closed", { code, reason });
  }

  private retry(code: number): void {
    this.state = "connecting";
    // A drain asks to move now; anything else waits its turn.
    const delay =
      code === CloseCode.DRAINING && this.attempt === 0
        ? 0
        : backoff(this.attempt, this.o.minDelay, this.o.maxDelay);
    this.attempt++;
    this.clear("retry");
    this.timers.retry = setTimeout(() => void this.open(), delay);
  }

  private clear(k: keyof Client["timers"]): void {
    clearTimeout(this.timers[k]);
    delete this.timers[k];
  }

  private welcomed(w: Welcome): void {
    this.clear("connect");
    this.welcome = w;
    this.state = "open";
    this.timers.stable = setTimeout(() => (this.attempt = 0), this.o.stableAfter);
    this.live(w.heartbeat_ms);
    if (this.o.refresh) this.scheduleRefresh(tokenExpiry(this.token));
    this.emit("connect", w);
    if (this.welcome !== w) return; // a listener closed or paused it
    for (const x of this.waiters.splice(0)) x.resolve(w);
    // Watched members resume first (their missed changes come as changes, before a waiting
    // read's reply could overtake them), then what was waiting, in order.
    for (const w of this.watches.values()) {
      if (!w.subscribing) void this.sync(w).catch(noop);
      if (w.wallet && !w.wallet.fetching) void this.fetchWallet(w).catch(noop);
    }
    for (const [id, p] of this.pending) if (!p.sent) this.transmit(id, p);
  }

  /** Browsers cannot see the server's websocket pings: ping with a command when idle, and
   *  give the connection up when nothing at all arrives for two heartbeats and a second. */
  private live(heartbeat: number): void {
    const limit = 2 * heartbeat + 1000;
    const tick = (): void => {
      const quiet = Date.now() - this.lastFrame;
      if (quiet >= limit) return this.drop(1006, `no frame from the server for ${quiet} ms`);
      if (quiet >= heartbeat && !this.pinging) {
        this.pinging = true;
        this.request({ type: "ping" }, { timeout: limit })
          .catch(noop)
          .finally(() => (this.pinging = false));
      }
      this.timers.live = setTimeout(tick, Math.max(100, heartbeat / 4));
    };
    this.timers.live = setTimeout(tick, Math.max(100, heartbeat / 4));
  }

  private scheduleRefresh(expiresAt: number | null): void {
    this.clear("refresh");
    if (expiresAt === null) return;
    const left = expiresAt - Date.now();
    this.timers.refresh = setTimeout(
      () => void this.refreshToken(),
      Math.max(0, left - Math.min(60_000, left / 3)),
    );
  }

  private async refreshToken(): Promise<void> {
    try {
      const token = await this.o.getToken();
      const r = await this.request({ type: "refresh", token });
      this.token = token;
      this.scheduleRefresh(r.expires_at);
      this.emit("token", { expiresAt: r.expires_at });
    } catch (err) {
      // If the session's token runs out it is closed with 3501 and the reconnect gets a new one.
      if (err instanceof GatewayError && err.code !== "connection_lost" && err.code !== "closed")
        this.emit("error", err);
    }
  }

  // ------------------------------------------------------------------ requests

  /** Send `command`; resolves with its `result` data, rejects with a GatewayError (its
   *  `code` from the server, or `request_timeout`). Sent when connected, and again after a
   *  reconnect unless it is `verify_contact` (then `connection_lost`). */
  request<C extends Command>(command: C, opts: { timeout?: number } = {}): Promise<ReplyTo<C>> {
    return this.enqueue(command, opts.timeout) as Promise<ReplyTo<C>>;
  }

  private enqueue(
    command: Command,
    timeout = this.o.timeout,
    extra: Pick<Pending, "build" | "done"> = {},
  ): Promise<ResultData> {
    if (this.state === "closed")
      return Promise.reject(new GatewayError("closed", "not connected: call connect()", false, command));
    return new Promise((resolve, reject) => {
      const id = `r${++this.n}`;
      const timer = setTimeout(() => {
        const p = this.pending.get(id);
        const what = p?.sent
          ? "no reply: outcome unknown, retry with the same op or ask outcome"
          : "not sent: not connected";
        this.settle(
          id,
          new GatewayError(
            "request_timeout",
            `${command.type} timed out after ${timeout} ms (${what})`,
            true,
            p?.command ?? command,
          ),
        );
      }, timeout);
      const p: Pending = { command, resolve, reject, timer, sent: false, ...extra };
      this.pending.set(id, p);
      if (this.welcome) this.transmit(id, p);
    });
  }

  private transmit(id: string, p: Pending): void {
    if (p.build) p.command = p.build();
    p.sent = true;
    this.ws!.send(JSON.stringify({ ...p.command, id }));
  }

  private settle(id: string, outcome: ResultData | GatewayError): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.done?.(outcome instanceof GatewayError ? undefined : outcome);
    if (outcome instanceof GatewayError) p.reject(outcome);
    else p.resolve(outcome);
  }

  /** A new operation id (the helpers make one per call; keep it to retry). */
  newOp(): string {
    return newOp();
  }

  ping = (): Promise<Pong> => this.request({ type: "ping" });
  balance = (member: string): Promise<Balance> => this.request({ type: "balance", member });
  history = (member: string, o: { limit?: number; before?: string } = {}): Promise<History> =>
    this.request({ type: "history", member, ...o });
  codes = (
    member: string,
    o: { status?: "active" | "used" | "expired" | "voided" | "all"; limit?: number; before?: string } = {},
  ): Promise<Codes> => this.request({ type: "codes", member, ...o });
  pass = (member: string): Promise<Pass> => this.request({ type: "pass", member });
  outcome = (op: string): Promise<Outcome> => this.request({ type: "outcome", op });
  updateProfile = (
    member: string,
    changes: Omit<UpdateProfile, "type" | "id" | "member">,
  ): Promise<Profile> => this.request({ type: "update_profile", member, ...changes });
  verifyContact = (member: string, to: { email: string } | { phone: string }): Promise<VerificationSent> =>
    this.request({ type: "verify_contact", member, ...to });
  confirmContact = (
    member: string,
    to: { email: string } | { phone: string },
    code: string,
  ): Promise<Profile> => this.request({ type: "confirm_contact", member, code, ...to });
  /** Points for a code. The `op` is made here unless given; on a timeout the error carries it. */
  redeemReward = (
    member: string,
    reward: string,
    o: { op?: string; timeout?: number } = {},
  ): Promise<RewardCode> => this.request({ type: "redeem_reward", op: o.op ?? newOp(), member, reward }, o);

  // ------------------------------------------------------------------ watching members

  /** Watch a member's balance (`balance` events), resumed after every reconnect. */
  subscribe(member: string, o: { presence?: boolean } = {}): Promise<Subscribed> {
    const w = this.watch(member);
    w.presence = o.presence ?? w.presence;
    return this.sync(w);
  }

  unsubscribe(member: string): Promise<Unsubscribed> {
    this.watches.delete(member);
    return this.request({ type: "unsubscribe", member });
  }

  /** The wallet view of `member`, then kept current: `wallet` events carry the view after
   *  every change (balance, code, profile), member events are applied by `seq`, and the
   *  view is fetched again when one is missed, on `refetch`, on `tier_changed` and after a
   *  reconnect. */
  wallet(member: string, o: { history?: number } = {}): Promise<WalletView> {
    const w = this.watch(member);
    w.wallet ??= { seq: null, fetching: 0, asked: 0, shown: 0, queue: [] };
    w.wallet.history = o.history ?? w.wallet.history;
    return this.fetchWallet(w);
  }

  /** The highest balance seen for `member`, if any. */
  balanceOf(member: string): MemberBalance | undefined {
    return this.balances.get(member);
  }

  /** The current wallet view of `member`, if `wallet()` was asked. */
  view(member: string): WalletView | undefined {
    return this.watches.get(member)?.wallet?.view;
  }

  private watch(member: string): Watch {
    let w = this.watches.get(member);
    if (!w) this.watches.set(member, (w = { member, presence: false, subscribing: false, held: new Map() }));
    return w;
  }

  private sync(w: Watch): Promise<Subscribed> {
    w.subscribing = true;
    const build = (): Command => {
      const since = this.balances.get(w.member)?.version;
      return {
        type: "subscribe",
        member: w.member,
        ...(since !== undefined ? { since } : {}),
        ...(w.presence ? { presence: true } : {}),
      };
    };
    return this.enqueue(build(), undefined, { build, done: () => (w.subscribing = false) }).then(
      (d) => d as Subscribed,
      (err: GatewayError) => {
        if (!err.retryable && err.code !== "closed") this.watches.delete(w.member);
        this.emit("error", err);
        throw err;
      },
    );
  }

  private fetchWallet(w: Watch): Promise<WalletView> {
    const s = w.wallet!;
    s.fetching++;
    const n = ++s.asked;
    const history = s.history;
    return this.enqueue({ type: "wallet", member: w.member, ...(history ? { history } : {}) }, undefined, {
      done: (d) => {
        s.fetching--;
        if (d?.kind === "wallet" && n > s.shown) {
          // The reply's seq is the truth even when lower (the server's counter started again).
          s.shown = n;
          s.seq = d.seq ?? 0;
          const known = this.balances.get(w.member);
          s.view = { ...d, balance: known && known.version >= d.balance.version ? known : d.balance };
          if (!this.move(w.member, d.balance, "reply")) this.emit("wallet", s.view);
        }
        this.drain(w);
      },
    }).then(() => s.view!);
  }

  // ------------------------------------------------------------------ receiving

  private receive(data: unknown): void {
    this.lastFrame = Date.now();
    let f: ServerFrame;
    try {
      f = JSON.parse(String(data)) as ServerFrame;
    } catch {
      return;
    }
    this.emit("frame", f);
    switch (f.type) {
      case "welcome":
        if (f.id === this.hello) this.welcomed(f);
        return;
      case "result":
        this.observe(f.data);
        return this.settle(f.id, f.data);
      case "error":
        return this.failed(f);
      case "balance_changed":
        return this.change(f, "change");
      case "resync":
        return this.truth(f.member, f.balance, f.reason);
      case "refetch": {
        const w = this.watches.get(f.member);
        if (w?.wallet && !w.wallet.fetching) void this.fetchWallet(w).catch(noop);
        return;
      }
      case "presence":
      case "notice":
        return this.emit(f.type, f as never);
      default:
        if (MEMBER_EVENTS.has(f.type)) this.memberEvent(f as MemberEvent);
    }
  }

  private failed(f: ErrorFrame): void {
    const p = f.id ? this.pending.get(f.id) : undefined;
    const err = new GatewayError(
      f.code,
      f.message,
      f.retryable ?? RETRYABLE_ERRORS.includes(f.code),
      p?.command,
    );
    // A draining node closes next (3000): such a command goes again on the next node.
    if (p && f.code === "draining" && !NOT_RESENT.has(p.command.type)) p.sent = false;
    else if (p) this.settle(f.id!, err);
    else this.emit("error", err); // a refused hello (the close follows), or a frame error
  }

  /** Every reply that carries a balance moves the member's known balance, if it is newer. */
  private observe(d: ResultData): void {
    if (d.kind === "subscribed") {
      for (const c of d.missed ?? []) this.change(c, "missed");
      const cur = this.balances.get(d.member);
      if (d.recovered === false && cur)
        return this.truth(d.member, d.balance, "changes since the last version seen are no longer kept");
      void this.move(d.member, d.balance, "reply");
    } else if (d.kind === "wallet") {
      // Its request's own handler takes it (fetchWallet): it knows which fetch it answers.
    } else if (d.kind === "outcome") {
      if (d.data) this.observe(d.data as ResultData);
    } else if (d.kind === "balance") {
      void this.move(d.member, d, "reply");
    } else if ("balance" in d && d.balance && "member" in d) {
      void this.move(typeof d.member === "string" ? d.member : d.member.member, d.balance, "reply");
    }
  }

  private change(c: BalanceChanged, reason: "change" | "missed"): void {
    const cur = this.balances.get(c.member)?.version;
    if (cur !== undefined && c.version <= cur) return; // seen, or older news
    const w = this.watches.get(c.member);
    if (w && cur !== undefined && c.version > cur + 1) {
      // A gap: keep this one, ask for what was missed since `cur`.
      w.held.set(c.version, c);
      if (!w.subscribing) void this.sync(w).catch(noop);
      return;
    }
    this.set(c.member, c, reason, c);
  }

  private move(member: string, b: MemberBalance, reason: "reply" | "resync"): boolean {
    const cur = this.balances.get(member)?.version;
    if (cur !== undefined && b.version <= cur) return false;
    this.set(member, b, reason);
    return true;
  }

  /** The server's truth after lost changes (a `resync` frame, `recovered=false`), unless a
   *  newer version is already known. */
  private truth(member: string, b: MemberBalance, reason: string): void {
    const cur = this.balances.get(member)?.version;
    if (cur !== undefined && b.version <= cur) return;
    this.set(member, b, "resync");
    this.emit("resync", { member, balance: this.balances.get(member)!, reason });
  }

  /** Record a newer balance, then the held pushes that follow it, then the view. */
  private set(
    member: string,
    b: MemberBalance,
    reason: BalanceEvent["reason"],
    change?: BalanceChanged,
  ): void {
    const w = this.watches.get(member);
    for (let next = change; ;) {
      const balance: MemberBalance = {
        posted: b.posted,
        held: b.held,
        available: b.available,
        version: b.version,
      };
      this.balances.set(member, balance);
      this.emit("balance", { member, balance, reason, ...(next ? { change: next } : {}) });
      if (!w) return;
      for (const v of w.held.keys()) if (v <= balance.version) w.held.delete(v);
      next = w.held.get(balance.version + 1);
      if (!next) break;
      b = next;
      reason = "change";
    }
    const s = w.wallet;
    if (s?.view) this.emit("wallet", (s.view = { ...s.view, balance: this.balances.get(member)! }));
  }

  private memberEvent(e: MemberEvent): void {
    const s = this.watches.get(e.member)?.wallet;
    if (!s) {
      if (e.type === "merged") this.watches.delete(e.member);
      return this.emit(e.type, e as never);
    }
    const w = this.watches.get(e.member)!;
    s.queue.push(e);
    // At or below the view's seq while no fetch is under way: the counter started again.
    if (!s.fetching && s.seq !== null && (e.seq ?? 0) <= s.seq) return void this.fetchWallet(w).catch(noop);
    this.drain(w);
  }

  /** Apply queued member events in `seq` order once no wallet fetch is under way: those at or
   *  below the view's `seq` came before its reply and are in it; the next one applies; any
   *  other means one was missed. */
  private drain(w: Watch): void {
    const s = w.wallet;
    if (!s || s.fetching || s.seq === null) return;
    s.queue.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
    while (s.queue.length) {
      const e = s.queue[0]!;
      const seq = e.seq ?? 0;
      if (seq <= s.seq) {
        s.queue.shift();
        continue;
      }
      if (seq !== s.seq + 1) return void this.fetchWallet(w).catch(noop);
      s.queue.shift();
      s.seq = seq;
      this.apply(w, e);
      if (!this.watches.has(w.member)) return;
    }
  }

  private apply(w: Watch, e: MemberEvent): void {
    const s = w.wallet!;
    const v = s.view;
    if (v && e.type === "code_changed") {
      const codes = v.codes.codes.filter((c) => c.code !== e.code.code);
      const at = v.codes.codes.findIndex((c) => c.code === e.code.code);
      codes.splice(at < 0 ? 0 : at, 0, e.code);
      s.view = { ...v, codes: { ...v.codes, codes } };
    } else if (v && e.type === "profile_changed") {
      s.view = { ...v, profile: e.profile };
    } else if (v && e.type === "offers_changed") {
      s.view = { ...v, targeted: e.targeted };
    }
    if (e.type === "merged") this.watches.delete(w.member);
    this.emit(e.type, e as never);
    if (s.view !== v) this.emit("wallet", s.view!);
    // A new tier changes what the member may redeem and its offers: read them again.
    if (e.type === "tier_changed") void this.fetchWallet(w).catch(noop);
  }
}
