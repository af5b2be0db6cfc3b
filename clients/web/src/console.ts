// The cashier console (/console): a level-2 register in a browser. Look a shopper up (phone,
// email, card or a scanned pass) or enrol them; see their tier with the recognition it earns,
// their balance, rewards, codes, offers and recent purchases, all live; ring up a basket, pay
// part of it with points (reserve, then commit or release) and apply a reward code.
import type { CashierState, MemberBalance, Purchase, RewardCode } from "../../js/src/index.ts";
import { Client, fill, h, money, pageConfig, points, reason, say, tokenSource, watchState, wsUrls } from "./page.ts";

interface Line {
  sku: string;
  name: string;
  qty: number;
  price: number;
}

const cfg = pageConfig();
const client = new Client({ url: wsUrls(cfg), getToken: tokenSource(cfg), clientName: "cashier-console/0.1" });
watchState(client, "c-notice");

let member = "";
let state: CashierState | undefined;
let basket: Line[] = [];
let hold: { op: string; points: number } | undefined;
let applied: RewardCode | undefined;
let refreshing: Promise<void> | undefined;

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const value = (id: string): string => $<HTMLInputElement>(id).value.trim();

/** What the cashier typed or scanned: an email has an @, a phone number is digits with an
 *  optional + and separators, a pass is the long signed token the wallet's QR holds, and
 *  anything else is a card number. */
export function identify(raw: string): Record<string, string> {
  const s = raw.trim();
  if (s.includes("@")) return { email: s };
  if (/^\+?[\d\s().-]{7,20}$/.test(s)) return { phone: s };
  if (s.length > 64 || s.split(".").length === 3) return { qr: s };
  return { card: s };
}

function balance(b: MemberBalance): void {
  const el = fill(
    "c-balance",
    h("p", { class: "big", id: "c-available" }, points(b.available)),
    b.held ? h("p", { class: "small" }, `${points(b.held)} held`) : null,
  );
  el.dataset.version = String(b.version);
  el.dataset.available = String(b.available);
}

function recognition(s: CashierState): HTMLElement | null {
  const t = s.tier;
  const rank = t.rank ?? 0;
  const top = rank > 0 && rank === t.tiers && (t.tiers ?? 0) > 1;
  if (rank < 2 && !top) return null;
  const name = s.member.name || "this shopper";
  return h(
    "p",
    { class: "recognition", id: "c-recognition" },
    top
      ? `Top tier: welcome ${name} personally and offer priority service.`
      : `${t.name || t.tier} member: thank ${name} for their loyalty.`,
  );
}

function member_(s: CashierState): void {
  const m = s.member;
  const t = s.tier;
  fill(
    "c-member",
    h("p", { class: "tier-name", id: "c-name" }, m.name || "(no name)"),
    h("p", {}, h("span", { class: "badge", id: "c-tier", data: { rank: String(t.rank ?? 0) } }, t.name || t.tier || "No tier"),
      t.multiplier && t.multiplier !== "1" ? ` earns ${t.multiplier}× points` : ""),
    recognition(s),
    t.next ? h("p", { class: "small" }, `${points(t.to_next ?? 0)} to ${t.next_name || t.next}`) : null,
    h("p", { class: "small" }, [m.phone, m.email, m.card].filter(Boolean).join(" · ")),
  );
}

function purchase(p: Purchase): HTMLElement {
  return h(
    "li",
    {},
    h("span", {}, new Date(p.at).toISOString().slice(0, 16).replace("T", " ")),
    h("span", { class: "name" }, p.store || p.channel),
    h("span", {}, money(p.total)),
    h("span", { class: "cost" }, `+${points(p.points)}`),
  );
}

function render(s: CashierState): void {
  state = s;
  $("c-panel").hidden = false;
  member_(s);
  balance(client.balanceOf(member) ?? s.balance);
  fill("c-offers", ...s.offers.map((o) => h("li", { data: { offer: o.offer } }, h("span", { class: "name" }, o.name),
    h("span", { class: "small" }, o.bonus ? `+${points(o.bonus)}` : o.multiplier && o.multiplier !== "1" ? `${o.multiplier}×` : ""))));
  if (!s.offers.length) fill("c-offers", h("li", { class: "empty" }, "No offers for this shopper"));
  fill("c-rewards", ...s.rewards.map((r) => h("li", { data: { reward: r.reward } }, h("span", { class: "name" }, r.name),
    h("span", { class: "cost" }, points(r.cost)), r.affordable ? "" : h("span", { class: "small" }, "not yet"))));
  fill("c-codes", ...s.codes.filter((c) => c.status === "issued").map((c) =>
    h("li", { data: { code: c.code } }, h("span", { class: "name" }, c.name || c.reward), h("code", {}, c.code),
      h("button", { type: "button", class: "secondary", on: { click: () => void applyCode(c.code) } }, "Apply"))));
  fill("c-recent", ...s.recent.map(purchase));
  if (!s.recent.length) fill("c-recent", h("li", { class: "empty" }, "No purchases yet"));
  document.body.dataset.member = member;
}

async function refresh(): Promise<void> {
  if (!member) return;
  // One fetch at a time: events that arrive meanwhile are covered by the next one.
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      render(await client.request({ type: "cashier_view", member, replace: true }));
    } catch (err) {
      say("c-notice", reason(err), "error");
    } finally {
      refreshing = undefined;
    }
  })();
  return refreshing;
}

async function show(who: string): Promise<void> {
  if (member && member !== who) await client.unsubscribe(member).catch(() => undefined);
  member = who;
  basket = [];
  hold = undefined;
  applied = undefined;
  drawBasket();
  await refresh();
  await client.subscribe(member); // balance pushes, resumed after a reconnect
}

async function find(e: Event): Promise<void> {
  e.preventDefault();
  const raw = value("c-find");
  if (!raw) return;
  $("c-enrol").hidden = true;
  try {
    const m = await client.request({ type: "lookup", ...identify(raw) });
    $<HTMLInputElement>("c-find").value = "";
    say("c-notice", "");
    await show(m.member);
  } catch (err) {
    const notFound = (err as { code?: string }).code === "member_not_found";
    say("c-notice", notFound ? "No member with that: enrol them?" : reason(err), notFound ? "ok" : "error");
    if (notFound && !("qr" in identify(raw))) $("c-enrol").hidden = false;
  }
}

async function enrol(): Promise<void> {
  const raw = value("c-find");
  try {
    const m = await client.request({ type: "enrol", ...identify(raw), name: value("c-enrol-name") });
    $("c-enrol").hidden = true;
    $<HTMLInputElement>("c-find").value = "";
    say("c-notice", m.created ? "Enrolled." : "Already a member.");
    await show(m.member);
  } catch (err) {
    say("c-notice", reason(err), "error");
  }
}

const total = (): number => basket.reduce((n, l) => n + l.qty * l.price, 0);
const due = (): number => Math.max(0, total() - (applied?.value ?? 0));

function drawBasket(): void {
  fill("c-lines", ...basket.map((l, i) => h("tr", {}, h("td", {}, l.name || l.sku), h("td", { class: "num" }, String(l.qty)),
    h("td", { class: "num" }, money(l.price * l.qty)),
    h("td", {}, h("button", { type: "button", class: "secondary", title: "Remove", on: { click: () => { basket.splice(i, 1); drawBasket(); } } }, "×")))));
  fill("c-total", `Total ${money(total())}`, applied ? ` − code ${money(applied.value ?? 0)} = ${money(due())}` : "",
    hold ? ` · ${points(hold.points)} reserved` : "");
  $<HTMLButtonElement>("c-sale").disabled = !member || !basket.length;
  $<HTMLButtonElement>("c-reserve").disabled = !member || !!hold;
  $<HTMLButtonElement>("c-commit").disabled = !hold;
  $<HTMLButtonElement>("c-release").disabled = !hold;
}

function addLine(e: Event): void {
  e.preventDefault();
  const price = Math.round(Number(value("c-price")) * 100);
  const qty = Number(value("c-qty") || "1");
  if (!value("c-sku") || !(price >= 0) || !(qty >= 1)) return;
  basket.push({ sku: value("c-sku"), name: value("c-item"), qty, price });
  for (const id of ["c-sku", "c-item", "c-price"]) $<HTMLInputElement>(id).value = "";
  $<HTMLInputElement>("c-qty").value = "1";
  drawBasket();
}

async function sale(): Promise<void> {
  const op = client.newOp();
  try {
    const r = await client.request({
      type: "sale",
      op,
      member,
      total: due(),
      lines: basket.map((l) => ({ sku: l.sku, qty: l.qty, price: l.price, ...(l.name ? { name: l.name } : {}) })),
    });
    basket = [];
    applied = undefined;
    say("c-notice", `Sale done: +${points(r.points)}.`);
    drawBasket();
    await refresh();
  } catch (err) {
    say("c-notice", reason(err), "error");
  }
}

async function reserve(): Promise<void> {
  const n = Number(value("c-points"));
  if (!(n > 0)) return;
  const op = client.newOp();
  try {
    await client.request({ type: "reserve", op, member, points: n });
    hold = { op, points: n };
    say("c-notice", `${points(n)} reserved.`);
  } catch (err) {
    say("c-notice", reason(err), "error");
  }
  drawBasket();
}

async function settle(commit: boolean): Promise<void> {
  if (!hold) return;
  const h0 = hold;
  try {
    await client.request(commit
      ? { type: "commit", op: `${h0.op}-c`, member, hold: h0.op }
      : { type: "release", op: `${h0.op}-r`, member, hold: h0.op });
    hold = undefined;
    say("c-notice", commit ? `${points(h0.points)} paid with points.` : "Points released.");
  } catch (err) {
    say("c-notice", reason(err), "error");
  }
  drawBasket();
}

async function applyCode(code: string): Promise<void> {
  try {
    applied = await client.request({ type: "use_code", op: client.newOp(), code });
    say("c-notice", `Code ${applied.code} applied: ${applied.name || applied.reward}.`);
    $<HTMLInputElement>("c-code").value = "";
    drawBasket();
    await refresh();
  } catch (err) {
    say("c-notice", reason(err), "error");
  }
}

async function main(): Promise<void> {
  $("c-lookup").addEventListener("submit", (e) => void find(e));
  $("c-enrol-go").addEventListener("click", () => void enrol());
  $("c-add").addEventListener("submit", addLine);
  $("c-sale").addEventListener("click", () => void sale());
  $("c-reserve").addEventListener("click", () => void reserve());
  $("c-commit").addEventListener("click", () => void settle(true));
  $("c-release").addEventListener("click", () => void settle(false));
  $("c-apply").addEventListener("submit", (e) => {
    e.preventDefault();
    if (value("c-code")) void applyCode(value("c-code"));
  });
  client.on("balance", (e) => {
    if (e.member === member) balance(e.balance);
  });
  for (const kind of ["code_changed", "tier_changed", "profile_changed", "resync"] as const) {
    client.on(kind, (f: { member: string }) => {
      if (f.member === member) void refresh();
    });
  }
  client.on("connect", () => void refresh()); // after a reconnect: the view afresh
  const welcome = await client.connect();
  const s = welcome.scope;
  if (s.kind !== "pos") {
    say("c-notice", "This console needs a register's token.", "error");
    client.close();
    return;
  }
  fill("c-where", `Store ${s.store ?? ""} · register ${s.terminal ?? ""}`);
  drawBasket();
  document.body.dataset.ready = "1";
}

main().catch((err) => say("c-notice", reason(err), "error"));
