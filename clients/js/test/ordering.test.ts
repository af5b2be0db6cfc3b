// Orders of arrival a real server makes only by chance, played by a scripted socket: pushes
// before the reply they follow, an event at or below the reply's seq, a gap held until the
// resubscribe fills it.
import { afterEach, expect, test } from "vitest";
import { Client, type WebSocketConstructor, type WebSocketLike } from "../src/index.js";

class Scripted implements WebSocketLike {
  static last: Scripted;
  static made = 0;
  readyState = 1;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: string }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: Record<string, unknown>[] = [];
  constructor(readonly url: string) {
    Scripted.last = this;
    Scripted.made++;
    queueMicrotask(() => this.onopen?.({}));
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(): void {}
  /** A server frame (written loosely: the scripts are JSON, as on the wire). */
  push(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  last(type: string): { id: string } & Record<string, unknown> {
    return this.sent.filter((f) => f.type === type).at(-1) as { id: string } & Record<string, unknown>;
  }
}

const M = "m-42";
const bal = (version: number, available = 1000 + version) => ({
  posted: available,
  held: 0,
  available,
  version,
});
const changed = (version: number) => ({
  type: "balance_changed",
  member: M,
  ...bal(version),
  cause: { kind: "earn", op: `o${version}` },
  at: 0,
});
const code = (c: string, status = "issued") => ({
  kind: "code",
  code: c,
  reward: "r",
  member: M,
  status,
  points: 10,
  expires_at: 0,
});
const view = (seq: number, version: number) => ({
  kind: "wallet",
  member: { kind: "member", member: M },
  balance: bal(version),
  tier: { tier: "base" },
  rewards: [],
  codes: { kind: "codes", member: M, codes: [] },
  offers: [],
  history: { kind: "history", member: M, purchases: [] },
  profile: { kind: "profile", member: M },
  seq,
});

let client: Client;
afterEach(() => client?.close());

async function connected(): Promise<Scripted> {
  client = new Client({
    url: "ws://scripted/ws",
    getToken: () => "t",
    WebSocket: Scripted as unknown as WebSocketConstructor,
    network: null,
  });
  const welcome = client.connect();
  await new Promise((r) => setTimeout(r, 0));
  const ws = Scripted.last;
  ws.push({
    type: "welcome",
    id: ws.last("hello").id,
    version: 1,
    session: "s",
    node: "n",
    heartbeat_ms: 60_000,
    scope: { kind: "app", merchant: "x", member: M },
  });
  await welcome;
  return ws;
}

test("events before the wallet reply are kept, applied when above its seq, dropped when in it", async () => {
  const ws = await connected();
  const applied: number[] = [];
  client.on("code_changed", (e) => applied.push(e.seq ?? 0));
  const pending = client.wallet(M);
  ws.push(changed(18)); // the push of a change overtakes the reply
  ws.push({ type: "code_changed", member: M, code: code("A"), seq: 8 });
  ws.push({ type: "code_changed", member: M, code: code("OLD"), seq: 6 });
  ws.push({ type: "result", id: ws.last("wallet").id, data: view(7, 17) });
  const v = await pending;
  expect(applied).toEqual([8]);
  expect(v.balance.version).toBe(18); // the highest version, not the reply's
  expect(v.codes.codes.map((c) => c.code)).toEqual(["A"]);
  expect(client.view(M)?.codes.codes.map((c) => c.code)).toEqual(["A"]);
  ws.push({ type: "code_changed", member: M, code: code("A", "redeemed"), seq: 9 });
  expect(client.view(M)?.codes.codes).toMatchObject([{ code: "A", status: "redeemed" }]);
  expect(ws.sent.filter((f) => f.type === "wallet").length).toBe(1);
  ws.push({ type: "code_changed", member: M, code: code("B"), seq: 11 }); // 10 was missed
  expect(ws.sent.filter((f) => f.type === "wallet").length).toBe(2);
  ws.push({ type: "code_changed", member: M, code: code("B"), seq: 11 }); // during the fetch: kept
  ws.push({ type: "result", id: ws.last("wallet").id, data: view(10, 18) });
  expect(applied).toEqual([8, 9, 11]);
  expect(ws.sent.filter((f) => f.type === "wallet").length).toBe(2);
});

test("a balance gap is held, filled from the resubscribe's missed, then the held push applies", async () => {
  const ws = await connected();
  const seen: [number, string][] = [];
  client.on("balance", (e) => seen.push([e.balance.version, e.reason]));
  const sub = client.subscribe(M);
  ws.push({
    type: "result",
    id: ws.last("subscribe").id,
    data: { kind: "subscribed", member: M, balance: { kind: "balance", member: M, ...bal(5) } },
  });
  await sub;
  ws.push(changed(6));
  ws.push(changed(9)); // 7 and 8 missing: held, and a subscribe since 6 asked
  expect(ws.last("subscribe")).toMatchObject({ since: 6 });
  ws.push(changed(6)); // a duplicate: dropped
  ws.push({
    type: "result",
    id: ws.last("subscribe").id,
    data: {
      kind: "subscribed",
      member: M,
      balance: { kind: "balance", member: M, ...bal(8) },
      missed: [changed(7), changed(8)],
    },
  });
  expect(seen).toEqual([
    [5, "reply"],
    [6, "change"],
    [7, "missed"],
    [8, "missed"],
    [9, "change"],
  ]);
  // A reply older than what was pushed moves nothing; a resync older than it neither.
  ws.push({ type: "result", id: "x", data: { kind: "balance", member: M, ...bal(8) } });
  ws.push({ type: "resync", member: M, balance: { kind: "balance", member: M, ...bal(9) }, reason: "r" });
  ws.push({ type: "resync", member: M, balance: { kind: "balance", member: M, ...bal(12) }, reason: "r" });
  expect(seen.at(-1)).toEqual([12, "resync"]);
  expect(seen.length).toBe(6);
});

test("a listener may close the client from its disconnect or connect event: it stays closed", async () => {
  const ws = await connected();
  client.on("disconnect", () => client.close());
  const made = Scripted.made;
  ws.onclose?.({ code: 1006, reason: "" });
  await new Promise((r) => setTimeout(r, 1500)); // past the first backoff's longest wait
  expect(Scripted.made).toBe(made);
  const again = new Client({
    url: "ws://scripted/ws",
    getToken: () => "t",
    WebSocket: Scripted as unknown as WebSocketConstructor,
    network: null,
  });
  again.on("connect", () => again.close());
  const welcome = again.connect();
  await new Promise((r) => setTimeout(r, 0));
  const hello = Scripted.last.last("hello");
  Scripted.last.push({
    type: "welcome",
    id: hello.id,
    version: 1,
    session: "s",
    node: "n",
    heartbeat_ms: 60_000,
    scope: { kind: "app", merchant: "x" },
  });
  await expect(welcome).rejects.toMatchObject({ code: "closed" });
});
