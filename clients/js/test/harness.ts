// What the gateway tests share: the world tests/clients/test_js_client.py set up (in LG_*
// environment variables), its control server, clients that record what they send, and
// waiting for events.
import WebSocket from "ws";
import { Client, type ClientEvents, type ClientOptions, type WebSocketConstructor } from "../src/index.js";

export const env = {
  control: process.env.LG_CONTROL ?? "",
  nodes: (process.env.LG_NODES ?? "").split(",").filter(Boolean),
  nodeIds: (process.env.LG_NODE_IDS ?? "").split(","),
  reward: process.env.LG_REWARD ?? "",
  heartbeatMs: Number(process.env.LG_HEARTBEAT_MS ?? 1000),
  maxRecovery: Number(process.env.LG_MAX_RECOVERY ?? 3),
};
export const live = env.control !== "";

/** One request to the control server. */
export async function ctl<T = Record<string, unknown>>(action: string, body: object = {}): Promise<T> {
  const r = await fetch(`${env.control}/${action}`, { method: "POST", body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`control ${action}: ${r.status} ${await r.text()}`);
  return (await r.json()) as T;
}

export const newMember = (points = 1000) => ctl<{ member: string; email: string }>("member", { points });
export const sale = (member: string, total = 1000) =>
  ctl<{ op: string; version: number; available: number }>("sale", { member, total });
export const node = (i: number, action: "kill" | "start" | "freeze" | "thaw") =>
  ctl("node", { node: i, action });

/** A getToken that mints through the control server and counts its calls. */
export function tokens(member: string, ttl: (call: number) => number = () => 3600) {
  const f = async () => {
    f.calls++;
    return (await ctl<{ token: string }>("token", { member, ttl: ttl(f.calls) })).token;
  };
  f.calls = 0;
  return f;
}

export interface Recorded {
  client: Client;
  /** Every frame the client sent, in order, across its connections. */
  sent: Record<string, unknown>[];
  events: { type: string; e: unknown }[];
}

const opened: Recorded[] = [];

export function client(member: string, o: Partial<ClientOptions> = {}): Recorded {
  const sent: Record<string, unknown>[] = [];
  class Recording extends WebSocket {
    override send(data: unknown, ...rest: unknown[]): void {
      sent.push(JSON.parse(String(data)) as Record<string, unknown>);
      (super.send as (...a: unknown[]) => void)(data, ...rest);
    }
  }
  const c = new Client({
    url: env.nodes,
    getToken: tokens(member),
    WebSocket: Recording as unknown as WebSocketConstructor,
    clientName: "vitest",
    network: null,
    ...o,
  });
  const events: Recorded["events"] = [];
  for (const type of [
    "connect",
    "disconnect",
    "closed",
    "balance",
    "resync",
    "wallet",
    "code_changed",
    "profile_changed",
    "token",
    "error",
  ] as const)
    c.on(type, (e) => events.push({ type, e }));
  const r = { client: c, sent, events };
  const frames: unknown[] = [];
  c.on("frame", (f) => {
    if (!(f.type === "result" && f.data.kind === "pong")) frames.push(f);
  });
  opened.push(Object.assign(r, { frames }));
  return r;
}

/** Close every client of the test; after a failure, print what each sent and received. */
export function closeAll(failed = false): void {
  for (const r of opened.splice(0)) {
    r.client.close();
    if (!failed) continue;
    const line = (x: unknown) => JSON.stringify(x).slice(0, 300);
    console.log(
      [
        "sent:",
        ...r.sent.map(line),
        "events:",
        ...r.events.map((x) => `${x.type} ${line(x.e)}`),
        "frames:",
        ...(r as { frames?: unknown[] }).frames!.map((f) => JSON.stringify(f).slice(-200)),
      ].join("\n"),
    );
  }
}

/** Like next(), but an event already recorded counts too. */
export function seen<K extends keyof ClientEvents>(
  r: Recorded,
  type: K,
  pred: (e: ClientEvents[K]) => boolean,
  ms = 10_000,
): Promise<ClientEvents[K]> {
  const done = r.events.find((x) => x.type === type && pred(x.e as ClientEvents[K]));
  return done ? Promise.resolve(done.e as ClientEvents[K]) : next(r, type, pred, ms);
}

/** The next `type` event (or one already recorded after `from`) that `pred` accepts. */
export function next<K extends keyof ClientEvents>(
  r: Recorded,
  type: K,
  pred: (e: ClientEvents[K]) => boolean = () => true,
  ms = 10_000,
): Promise<ClientEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no ${type} event in ${ms} ms`));
    }, ms);
    const stop = r.client.on(type, (e) => {
      if (!pred(e)) return;
      clearTimeout(timer);
      stop();
      resolve(e);
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const sentOf = (r: Recorded, type: string) => r.sent.filter((f) => f.type === type);
