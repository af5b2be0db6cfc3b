// The client against real gateway nodes, started by tests/clients/test_js_client.py (which
// runs this suite with the LG_* variables set; without them it is skipped).
import { afterEach, describe, expect, test } from "vitest";
import { CloseCode, GatewayError, type BalanceEvent, type Command } from "../src/index.js";
import {
  client,
  closeAll,
  ctl,
  env,
  live,
  newMember,
  next,
  node,
  sale,
  seen,
  sentOf,
  sleep,
  tokens,
} from "./harness.js";

afterEach((ctx) => closeAll(ctx.task.result?.state === "fail"));

/** The versions `balance` events moved through, in order. */
const versions = (r: { events: { type: string; e: unknown }[] }) =>
  r.events.filter((x) => x.type === "balance").map((x) => (x.e as BalanceEvent).balance.version);

describe.skipIf(!live)("against real gateway nodes", () => {
  test("connect: hello with the versions and a token from getToken, then welcome", async () => {
    const { member } = await newMember();
    const getToken = tokens(member);
    const r = client(member, { getToken });
    const w = await r.client.connect();
    expect(w.node).toBe(env.nodeIds[0]);
    expect(w.heartbeat_ms).toBe(env.heartbeatMs);
    expect(w.scope).toMatchObject({ kind: "app", member });
    expect(w.session).toBeTruthy();
    expect(r.client.welcome).toEqual(w);
    expect(getToken.calls).toBe(1);
    const hello = r.sent[0]!;
    expect(hello).toMatchObject({ type: "hello", versions: [1], client: "vitest" });
  });

  test("a request and its reply; a refusal is a GatewayError with the server's code", async () => {
    const { member } = await newMember();
    const other = await newMember();
    const r = client(member);
    await r.client.connect();
    const [b, pong] = await Promise.all([r.client.balance(member), r.client.ping()]);
    expect(b).toMatchObject({ kind: "balance", member, available: 1000 });
    expect(pong.kind).toBe("pong");
    const refused = await r.client.balance(other.member).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(GatewayError);
    expect(refused).toMatchObject({ code: "forbidden", retryable: false });
  });

  test("a request times out when its node does not answer; the client goes on", async () => {
    const { member } = await newMember();
    const r = client(member);
    await r.client.connect();
    await node(0, "freeze");
    try {
      const err = await r.client
        .request({ type: "balance", member }, { timeout: 300 })
        .catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: "request_timeout",
        retryable: true,
        command: { type: "balance", member },
      });
    } finally {
      await node(0, "thaw");
    }
    expect((await r.client.balance(member)).available).toBe(1000);
  });

  test("a sale at a register reaches the wallet as a push", async () => {
    const { member } = await newMember();
    const r = client(member);
    await r.client.connect();
    const view = await r.client.wallet(member);
    expect(view.balance.available).toBe(1000);
    const s = await sale(member, 1234);
    const e = await seen(r, "balance", (x) => x.reason === "change");
    expect(e.balance).toEqual({ posted: 1012, held: 0, available: 1012, version: s.version });
    expect(e.change?.cause).toMatchObject({ kind: "earn", op: s.op, channel: "pos" });
    expect((await seen(r, "wallet", (v) => v.balance.available === 1012)).balance.version).toBe(s.version);
    expect(r.client.balanceOf(member)?.version).toBe(s.version);
  });

  test("a killed node: the client reconnects to the other and resumes by since, missing nothing", async () => {
    const { member } = await newMember();
    const r = client(member);
    await r.client.connect();
    const sub = await r.client.subscribe(member);
    const before = sub.balance.version;
    const reconnected = next(r, "connect", () => true, 20_000);
    const lost = next(r, "disconnect");
    try {
      await node(0, "kill");
      expect(await lost).toMatchObject({ code: 1006, reconnect: true });
      // Changes while the client is away (its first retry waits at least 0.5 s).
      const a = await sale(member, 100);
      const b = await sale(member, 200);
      expect((await reconnected).node).toBe(env.nodeIds[1]);
      await seen(r, "balance", (e) => e.balance.version === b.version);
      const resumed = sentOf(r, "subscribe").at(-1)!;
      expect(resumed).toMatchObject({ member, since: before });
      expect(versions(r)).toEqual([before, a.version, b.version]);
      const missed = r.events.filter(
        (x) => x.type === "balance" && (x.e as BalanceEvent).reason === "missed",
      );
      expect(missed.map((x) => (x.e as BalanceEvent).change?.cause.op)).toEqual([a.op, b.op]);
      // Live again on the new node.
      const c = await sale(member, 300);
      await seen(r, "balance", (e) => e.balance.version === c.version && e.reason === "change");
    } finally {
      await node(0, "start");
    }
  });

  test("recovered=false: the fresh balance comes as a resync event, never a silent gap", async () => {
    const { member } = await newMember();
    const r = client(member);
    await r.client.connect();
    const sub = await r.client.subscribe(member);
    r.client.pause();
    let last = { version: 0, available: 0 };
    for (let i = 0; i <= env.maxRecovery; i++) last = await sale(member, 100);
    expect(last.version - sub.balance.version).toBeGreaterThan(env.maxRecovery);
    const resync = next(r, "resync");
    r.client.resume();
    const e = await resync;
    expect(e.balance).toMatchObject({ version: last.version, available: last.available });
    expect(e.member).toBe(member);
    expect(versions(r)).toEqual([sub.balance.version, last.version]);
    const moved = r.events.filter((x) => x.type === "balance").at(-1)!.e as BalanceEvent;
    expect(moved.reason).toBe("resync");
  });

  test("the token is refreshed through getToken and the refresh command before it expires", async () => {
    const { member } = await newMember();
    const getToken = tokens(member, () => 3);
    const r = client(member, { getToken });
    const w = await r.client.connect();
    const refreshed = await next(r, "token");
    expect(refreshed.expiresAt).toBeGreaterThan(Date.now());
    await sleep(4000); // past the first token's expiry
    expect((await r.client.balance(member)).member).toBe(member);
    expect(r.client.welcome?.session).toBe(w.session);
    expect(r.events.filter((x) => x.type === "disconnect")).toEqual([]);
    expect(sentOf(r, "refresh").length).toBeGreaterThanOrEqual(2);
    expect(getToken.calls).toBeGreaterThanOrEqual(3);
  });

  test("a 3501 close: a new token from getToken, then a new session", async () => {
    const { member } = await newMember();
    const getToken = tokens(member, (call) => (call === 1 ? 2 : 3600));
    const r = client(member, { getToken, refresh: false });
    const first = await r.client.connect();
    const again = next(r, "connect", () => true, 15_000);
    const closed = await next(r, "disconnect", () => true, 10_000);
    expect(closed).toMatchObject({ code: CloseCode.TOKEN_EXPIRED, reconnect: true });
    const second = await again;
    expect(second.session).not.toBe(first.session);
    expect(getToken.calls).toBe(2);
    expect((await r.client.balance(member)).member).toBe(member);
  });

  test("a 3500 close (a bad token) is final: no reconnect", async () => {
    const r = client("nobody", { getToken: () => "not.a.token" });
    const err = await r.client.connect().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "closed" });
    expect(r.events.find((x) => x.type === "closed")?.e).toMatchObject({ code: CloseCode.TOKEN_INVALID });
    expect(r.events.find((x) => x.type === "error")?.e).toMatchObject({ code: "token_invalid" });
    await sleep(1500);
    expect(sentOf(r, "hello").length).toBe(1);
  });

  test("offline pauses, online resumes: requests wait, the balance resumes with what was missed", async () => {
    const { member } = await newMember();
    const network = new EventTarget();
    const r = client(member, { network });
    await r.client.connect();
    const sub = await r.client.subscribe(member);
    network.dispatchEvent(new Event("offline"));
    expect(r.events.at(-1)).toMatchObject({ type: "disconnect", e: { code: 1000, reconnect: false } });
    const s = await sale(member, 500);
    const waiting = r.client.balance(member);
    await sleep(1500);
    expect(r.events.filter((x) => x.type === "connect").length).toBe(1); // stays paused
    network.dispatchEvent(new Event("online"));
    expect((await waiting).version).toBe(s.version);
    await seen(r, "balance", (e) => e.balance.version === s.version);
    expect(versions(r)).toEqual([sub.balance.version, s.version]);
    expect(sentOf(r, "subscribe").at(-1)).toMatchObject({ since: sub.balance.version });
  });

  test("an op is made once and kept: a resend after a lost connection and a caller's retry apply nothing twice", async () => {
    const { member } = await newMember(2000);
    const r = client(member);
    await r.client.connect();
    await r.client.wallet(member);
    // Sent, then the connection goes before the reply can come back: sent again on resume.
    const redeemed = r.client.redeemReward(member, env.reward);
    r.client.pause();
    r.client.resume();
    const code = await redeemed;
    const sends = sentOf(r, "redeem_reward");
    expect(sends.length).toBe(2);
    expect(sends[1]!.op).toBe(sends[0]!.op);
    expect(code.balance?.available).toBe(1500);
    // The caller's retry of a timed-out command: the same op, the ledger's first answer.
    const on = env.nodeIds.indexOf(r.client.welcome!.node);
    await node(on, "freeze");
    let timedOut: GatewayError;
    try {
      timedOut = (await r.client
        .redeemReward(member, env.reward, { timeout: 300 })
        .catch((e: unknown) => e)) as GatewayError;
      expect(timedOut.code).toBe("request_timeout");
      expect(timedOut.op).toMatch(/^js-/);
    } finally {
      await node(on, "thaw");
    }
    const again = timedOut.command as Extract<Command, { type: "redeem_reward" }>;
    const first = await r.client.request(again);
    const second = await r.client.request(again);
    expect(second.code).toBe(first.code);
    expect(first.balance?.available).toBe(1000);
    expect((await r.client.balance(member)).available).toBe(1000);
    const outcome = await r.client.outcome(timedOut.op!);
    expect(outcome).toMatchObject({ ok: true, op: timedOut.op });
    const codes = await r.client.codes(member, { status: "active" });
    expect(codes.codes.map((c) => c.code).sort()).toEqual([code.code, first.code].sort());
  });

  test("the wallet seq rule: the next event applies, a gap, a lower seq or a refetch fetch the wallet again", async () => {
    const { member } = await newMember();
    const r = client(member);
    await r.client.connect();
    const view = await r.client.wallet(member);
    const seq = view.seq ?? 0;
    const wallets = () => sentOf(r, "wallet").length;
    // The next seq: applied to the view, no fetch.
    let changed = next(r, "wallet", (v) => v.profile.name === "Ada 1");
    await ctl("profile", { member, name: "Ada 1" });
    await changed;
    expect(wallets()).toBe(1);
    // A gap (an event numbered but never delivered): the wallet again.
    await ctl("event_seq", { member, action: "skip" });
    changed = next(r, "wallet", (v) => v.profile.name === "Ada 2" && v.seq === seq + 3);
    await ctl("profile", { member, name: "Ada 2" });
    await changed;
    expect(wallets()).toBe(2);
    // A lower seq (the counter was lost): the wallet again.
    await ctl("event_seq", { member, action: "reset" });
    changed = next(r, "wallet", (v) => v.profile.name === "Ada 3" && v.seq === 1);
    await ctl("profile", { member, name: "Ada 3" });
    await changed;
    expect(wallets()).toBe(3);
    // A refetch push (the node lost its member events connection): the wallet again.
    const refetched = next(r, "wallet", () => wallets() === 4, 15_000);
    await ctl("drop_pubsub");
    await refetched;
    // And events go on applying after it.
    const applied = next(r, "profile_changed", (e) => e.profile.name === "Ada 4");
    await ctl("profile", { member, name: "Ada 4" });
    await applied;
    expect(r.client.view(member)?.profile.name).toBe("Ada 4");
  });

  test("codes: a redemption and its use at a register update the view's codes", async () => {
    const { member } = await newMember();
    const r = client(member);
    await r.client.connect();
    await r.client.wallet(member);
    const issued = next(r, "code_changed", (e) => e.code.status === "issued");
    const code = await r.client.redeemReward(member, env.reward);
    expect((await issued).code.code).toBe(code.code);
    expect(r.client.view(member)?.codes.codes[0]).toMatchObject({ code: code.code, status: "issued" });
    const used = next(r, "wallet", (v) => v.codes.codes[0]?.status === "redeemed");
    await ctl("use_code", { code: code.code });
    await used;
    expect(r.client.view(member)?.codes.codes.length).toBe(1);
    expect((await r.client.codes(member, { status: "used" })).codes.map((c) => c.code)).toEqual([code.code]);
  });

  test("profile, a verified email, history and pass", async () => {
    const { member } = await newMember();
    const r = client(member);
    await r.client.connect();
    const p = await r.client.updateProfile(member, {
      birthday: { month: 3, day: 14 },
      consent: { email: true },
    });
    expect(p).toMatchObject({
      birthday: { month: 3, day: 14 },
      consent: { email: { granted: true, source: "app" } },
    });
    const email = `js-${Date.now()}@example.org`;
    const sent = await r.client.verifyContact(member, { email });
    expect(sent).toMatchObject({ kind: "verification", contact: "email" });
    let codes: string[] = [];
    for (let i = 0; i < 50 && codes.length === 0; i++) {
      codes = (await ctl<{ codes: string[] }>("mail", { to: email })).codes;
      if (!codes.length) await sleep(100);
    }
    const confirmed = await r.client.confirmContact(member, { email }, codes[0]!);
    expect(confirmed.email).toBe(email);
    const history = await r.client.history(member, { limit: 5 });
    expect(history.purchases.length).toBe(1);
    const pass = await r.client.pass(member);
    expect(pass).toMatchObject({ kind: "pass", member });
  });

  test("a silent node (no frame within two heartbeats): the client moves to the other", async () => {
    const { member } = await newMember();
    const r = client(member);
    const w = await r.client.connect();
    expect(w.node).toBe(env.nodeIds[0]);
    await r.client.subscribe(member);
    const moved = next(r, "connect", () => true, 20_000);
    const started = Date.now();
    await node(0, "freeze");
    try {
      const d = await next(r, "disconnect", () => true, 10_000);
      expect(d).toMatchObject({ code: 1006, reconnect: true });
      expect(Date.now() - started).toBeLessThan(2 * env.heartbeatMs + 1000 + 1500);
      expect((await moved).node).toBe(env.nodeIds[1]);
      const s = await sale(member, 100);
      await seen(r, "balance", (e) => e.balance.version === s.version);
      expect(sentOf(r, "ping").length).toBeGreaterThan(0);
    } finally {
      await node(0, "thaw");
    }
  });
});
