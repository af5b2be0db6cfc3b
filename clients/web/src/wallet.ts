// The shopper's wallet page (/wallet): balance, tier and progress, the pass to show at the
// register, rewards to redeem, the shopper's codes as QR, offers, history and the profile; kept
// current by the client's wallet view (every push, every missed event fetched again).
import type { History, Profile, Purchase, RewardCode, WalletView } from "../../js/src/index.ts";
import {
  Client,
  GatewayError,
  day,
  fill,
  h,
  money,
  pageConfig,
  points,
  qr,
  reason,
  say,
  tokenSource,
  watchState,
  wsUrls,
} from "./page.ts";

/** Refresh the pass this long before it expires. */
const PASS_MARGIN_MS = 30_000;

const cfg = pageConfig();
const client = new Client({ url: wsUrls(cfg), getToken: tokenSource(cfg), clientName: "wallet-page/0.1" });
watchState(client, "notice");

let member = "";
/** The first page of purchases: the view's, then read again after each change of points. */
let recent: History | undefined;
let recentFrom: History | undefined;
let historyTimer: ReturnType<typeof setTimeout> | undefined;
let older: Purchase[] = [];
let olderNext: string | null | undefined;
let passTimer: ReturnType<typeof setTimeout> | undefined;
let profileShown = "";
/** The profile's own time zone, as the server last said (null: none given yet). */
let zoneShown: string | null = null;

function balance(v: WalletView): void {
  const b = v.balance;
  const el = fill(
    "balance",
    h("p", { class: "big", id: "available" }, points(b.available)),
    b.held ? h("p", { class: "small" }, `${points(b.held)} held at a register, ${points(b.posted)} in all`) : null,
  );
  el.dataset.version = String(b.version);
  el.dataset.available = String(b.available);
}

function tier(v: WalletView): void {
  const t = v.tier;
  const next = t.next && t.next_threshold
    ? [
        h("progress", { value: String(t.qualifying ?? 0), max: String(t.next_threshold) }),
        h("p", { class: "small" }, `${points(t.to_next ?? 0)} more to ${t.next_name || t.next}`, t.window_days ? ` (last ${t.window_days} days)` : ""),
      ]
    : [h("p", { class: "small" }, "The top tier")];
  fill(
    "tier",
    h("p", { class: "tier-name", data: { tier: t.tier } }, t.name || t.tier || "Member"),
    t.multiplier && t.multiplier !== "1" ? h("p", { class: "small" }, `Earns ${t.multiplier}× points`) : null,
    ...next,
  );
}

function rewards(v: WalletView): void {
  fill(
    "rewards",
    ...v.rewards.map((r) =>
      h(
        "li",
        { data: { reward: r.reward } },
        h("span", { class: "name" }, r.name),
        h("span", { class: "cost" }, points(r.cost)),
        h(
          "button",
          {
            type: "button",
            disabled: !r.affordable,
            title: r.affordable ? "Redeem for a code" : "Not enough points yet",
            on: { click: (e) => void redeem(r.reward, e.currentTarget as HTMLButtonElement) },
          },
          "Redeem",
        ),
      ),
    ),
  );
  if (!v.rewards.length) fill("rewards", h("li", { class: "empty" }, "No rewards yet"));
}

async function redeem(reward: string, button: HTMLButtonElement): Promise<void> {
  button.disabled = true;
  try {
    const code = await client.redeemReward(member, reward);
    say("notice", `Your code ${code.code} is ready: show it at the register.`);
  } catch (err) {
    say("notice", reason(err), "error");
    button.disabled = false;
  }
}

function codeItem(c: RewardCode): HTMLElement {
  const active = c.status === "issued";
  return h(
    "li",
    { class: `code ${c.status}`, data: { code: c.code, status: c.status } },
    active ? qr(c.code, `Code ${c.code}`) : null,
    h("span", { class: "name" }, c.name || c.reward),
    h("code", {}, c.code),
    h("span", { class: "small" }, active ? `valid until ${day(c.expires_at)}` : c.status === "redeemed" ? "used" : c.status),
  );
}

function codes(v: WalletView): void {
  const list = v.codes.codes;
  fill("codes", ...list.map(codeItem));
  if (!list.length) fill("codes", h("li", { class: "empty" }, "No codes yet"));
}

function offers(v: WalletView): void {
  fill(
    "offers",
    ...v.offers.map((o) =>
      h(
        "li",
        { data: { offer: o.offer } },
        h("span", { class: "name" }, o.name),
        h(
          "span",
          { class: "small" },
          o.bonus ? `+${points(o.bonus)}` : o.multiplier && o.multiplier !== "1" ? `${o.multiplier}× points` : "",
          o.min_total ? ` on ${money(o.min_total)} or more` : "",
          o.ends_at ? ` · until ${day(o.ends_at)}` : "",
        ),
      ),
    ),
  );
  if (!v.offers.length) fill("offers", h("li", { class: "empty" }, "No offers right now"));
}

function purchase(p: Purchase): HTMLElement {
  return h(
    "li",
    { data: { op: p.op } },
    h("span", {}, day(p.at)),
    h("span", { class: "name" }, p.store ? `${p.channel} · ${p.store}` : p.channel),
    h("span", {}, money(p.total)),
    h("span", { class: "cost" }, `+${points(p.points)}`, p.returned_points ? ` (−${p.returned_points} returned)` : ""),
  );
}

function history(v: WalletView): void {
  if (v.history !== recentFrom) {
    // a view fetched afresh: its first page is the newest
    recentFrom = v.history;
    recent = v.history;
    older = [];
  }
  const first = recent ?? v.history;
  fill("history", ...[...first.purchases, ...older].map(purchase));
  if (!first.purchases.length) fill("history", h("li", { class: "empty" }, "No purchases yet"));
  const next = older.length ? olderNext : first.next;
  const more = document.getElementById("more") as HTMLButtonElement;
  more.hidden = !next;
  more.dataset.next = next ?? "";
}

/** A sale, a return or a redemption moved the points: read the first page again (once for a
 *  burst of changes). */
function historyChanged(): void {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => {
    client.history(member).then(
      (page) => {
        recent = page;
        older = [];
        const v = client.view(member);
        if (v) history(v);
      },
      () => undefined, // the next change or reconnect reads it again
    );
  }, 100);
}

async function loadMore(): Promise<void> {
  const more = document.getElementById("more") as HTMLButtonElement;
  const before = more.dataset.next;
  if (!before) return;
  more.disabled = true;
  try {
    const page: History = await client.history(member, { before });
    older = [...older, ...page.purchases];
    olderNext = page.next ?? null;
    const v = client.view(member);
    if (v) history(v);
  } catch (err) {
    say("notice", reason(err), "error");
  } finally {
    more.disabled = false;
  }
}

function input(id: string): HTMLInputElement {
  return document.getElementById(id) as HTMLInputElement;
}

function profile(p: Profile): void {
  const key = JSON.stringify(p);
  const form = document.getElementById("profile") as HTMLFormElement;
  // Not while the shopper is editing it: their typing wins until they save.
  if (key === profileShown || form.contains(document.activeElement) || form.dataset.dirty) return;
  profileShown = key;
  fill("who", p.name || "Your wallet");
  input("p-name").value = p.name ?? "";
  input("p-month").value = p.birthday ? String(p.birthday.month) : "";
  input("p-day").value = p.birthday ? String(p.birthday.day) : "";
  input("p-store").value = p.preferred_store ?? "";
  zoneShown = p.time_zone ?? null;
  fill("p-zone", zoneShown ? `Birthday rewards begin at midnight, ${zoneShown} time.` : "");
  input("p-consent-email").checked = !!p.consent?.email?.granted;
  input("p-consent-sms").checked = !!p.consent?.sms?.granted;
  input("c-email").placeholder = p.email ?? "you@example.com";
}

function browserZone(): string | null {
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    return zone && /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+){0,2}$/.test(zone) ? zone : null;
  } catch {
    return null;
  }
}

async function saveProfile(e: Event): Promise<void> {
  e.preventDefault();
  const form = e.currentTarget as HTMLFormElement;
  const month = Number(input("p-month").value);
  const dayOf = Number(input("p-day").value);
  const store = input("p-store").value.trim();
  const changes = {
    name: input("p-name").value.trim(),
    ...(month && dayOf ? { birthday: { month, day: dayOf } } : {}),
    consent: { email: input("p-consent-email").checked, sms: input("p-consent-sms").checked },
    ...(store ? { preferred_store: store } : { clear_preferred_store: true }),
  };
  // A birthday given with no time zone yet takes the browser's, so the reward begins at the
  // shopper's own midnight; a zone the server does not know is left out rather than refused.
  const zone = month && dayOf && !zoneShown ? browserZone() : null;
  try {
    let p: Profile;
    try {
      p = await client.updateProfile(member, zone ? { ...changes, time_zone: zone } : changes);
    } catch (err) {
      if (!(zone && err instanceof GatewayError && err.code === "time_zone_unknown")) throw err;
      p = await client.updateProfile(member, changes);
    }
    delete form.dataset.dirty;
    profileShown = "";
    (document.activeElement as HTMLElement | null)?.blur();
    profile(p);
    say("profile-notice", "Saved.");
  } catch (err) {
    say("profile-notice", reason(err), "error");
  }
}

async function sendCode(): Promise<void> {
  const email = input("c-email").value.trim();
  try {
    const sent = await client.verifyContact(member, { email });
    (document.getElementById("c-confirm") as HTMLElement).hidden = false;
    say("contact-notice", `A code went to ${sent.to}.`);
  } catch (err) {
    say("contact-notice", reason(err), "error");
  }
}

async function confirmCode(): Promise<void> {
  try {
    const p = await client.confirmContact(member, { email: input("c-email").value.trim() }, input("c-code").value.trim());
    (document.getElementById("c-confirm") as HTMLElement).hidden = true;
    input("c-code").value = "";
    input("c-email").value = "";
    say("contact-notice", `Your email is now ${p.email ?? ""}.`);
  } catch (err) {
    say("contact-notice", reason(err), "error");
  }
}

async function showPass(): Promise<void> {
  clearTimeout(passTimer);
  try {
    const pass = await client.pass(member);
    fill("pass", qr(pass.token, "Your member pass"), h("p", { class: "small" }, "Show this at the register"));
    passTimer = setTimeout(() => void showPass(), Math.max(5_000, pass.expires_at - Date.now() - PASS_MARGIN_MS));
  } catch {
    passTimer = setTimeout(() => void showPass(), 5_000);
  }
}

function render(v: WalletView): void {
  balance(v);
  tier(v);
  rewards(v);
  codes(v);
  offers(v);
  history(v);
  profile(v.profile);
  document.body.dataset.ready = "1";
}

async function main(): Promise<void> {
  (document.getElementById("profile") as HTMLFormElement).addEventListener("submit", (e) => void saveProfile(e));
  document.getElementById("profile")!.addEventListener("input", (e) => {
    (e.currentTarget as HTMLFormElement).dataset.dirty = "1";
  });
  document.getElementById("more")!.addEventListener("click", () => void loadMore());
  document.getElementById("c-send")!.addEventListener("click", () => void sendCode());
  document.getElementById("c-ok")!.addEventListener("click", () => void confirmCode());
  client.on("wallet", render);
  client.on("balance", (e) => {
    const kind = e.change?.cause?.kind;
    if (e.member === member && e.reason !== "reply" && kind !== "hold" && kind !== "release") historyChanged();
  });
  client.on("merged", () => say("notice", "Your memberships were merged: sign in again.", "error"));
  const welcome = await client.connect();
  member = welcome.scope.member ?? "";
  if (!member) {
    say("notice", "This page needs a shopper's token, not a register's.", "error");
    client.close();
    return;
  }
  render(await client.wallet(member));
  void showPass();
}

main().catch((err) => say("notice", reason(err), "error"));
