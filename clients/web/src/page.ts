// What both pages share: the node's settings (a <meta> tag), where the token comes from, the
// connection state shown to the person in front of the page, and a DOM builder that only ever
// makes text nodes of data (no innerHTML anywhere: a member's name is text, whatever it holds).
import { encodeQR } from "qr";
import { Client, GatewayError } from "../../js/src/index.ts";

export { Client, GatewayError };

export interface PageConfig {
  /** Websocket URLs to try in turn; empty: this node's /ws. */
  ws: string[];
  /** The merchant back end's token endpoint (a credentialed POST), if any. */
  tokenUrl: string;
  /** Origins whose embedding page may hand this one a token by postMessage. */
  embedders: string[];
}

export function pageConfig(): PageConfig {
  const meta = document.querySelector<HTMLMetaElement>('meta[name="lg-config"]');
  const c = JSON.parse(meta?.content || "{}") as Partial<PageConfig>;
  return { ws: c.ws ?? [], tokenUrl: c.tokenUrl ?? "", embedders: c.embedders ?? [] };
}

export function wsUrls(c: PageConfig): string[] {
  if (c.ws.length) return c.ws;
  return [`${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`];
}

/** Seconds an embedding app has to answer a token request. */
const TOKEN_WAIT_MS = 10_000;

/** The token source: the merchant back end's endpoint when configured (it knows the shopper
 *  or the register from its own login cookie), else the app or page that embeds this one,
 *  asked by postMessage and trusted only from this origin or an allowed embedder. Never the
 *  URL: a token in a URL ends up in logs, histories and Referer headers. */
export function tokenSource(c: PageConfig): () => Promise<string> {
  if (c.tokenUrl) {
    return async () => {
      const r = await fetch(c.tokenUrl, {
        method: "POST",
        credentials: "include",
        headers: { Accept: "application/json" },
      });
      if (!r.ok) throw new Error(`the token endpoint answered ${r.status}`);
      const body = (await r.json()) as { token?: unknown };
      if (typeof body.token !== "string") throw new Error("the token endpoint sent no token");
      return body.token;
    };
  }
  const trusted = new Set([location.origin, ...c.embedders]);
  return () =>
    new Promise<string>((resolve, reject) => {
      const host: Window | null = window.parent !== window ? window.parent : window.opener;
      if (!host) {
        reject(new Error("no app embeds this page to hand it a token"));
        return;
      }
      const done = (): void => {
        clearTimeout(timer);
        removeEventListener("message", on);
      };
      const on = (e: MessageEvent): void => {
        if (e.source !== host || !trusted.has(e.origin)) return;
        const d = e.data as { type?: unknown; token?: unknown } | null;
        if (d?.type === "loyalty:token" && typeof d.token === "string") {
          done();
          resolve(d.token);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error("the embedding app sent no token"));
      }, TOKEN_WAIT_MS);
      addEventListener("message", on);
      // The request carries nothing: any origin may see it; only a trusted one is believed.
      host.postMessage({ type: "loyalty:token-request" }, "*");
    });
}

export type State = "connecting" | "live" | "reconnecting" | "offline" | "stopped";

const STATE_TEXT: Record<State, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline: waiting for the network",
  stopped: "Signed out",
};

/** Show the connection's state in #status and as body[data-state] (for styles and tests), and
 *  an error no request waits for (no token, a refused hello) in #notice. */
export function watchState(client: Client, notice: string): void {
  const set = (s: State, detail = ""): void => {
    document.body.dataset.state = s;
    const el = document.getElementById("status");
    if (el) el.textContent = detail ? `${STATE_TEXT[s]} ${detail}` : STATE_TEXT[s];
  };
  set("connecting");
  client.on("connect", () => set("live"));
  client.on("disconnect", (e) => set(navigator.onLine === false ? "offline" : e.reconnect ? "reconnecting" : "stopped"));
  client.on("closed", (e) => set("stopped", `(${e.reason || e.code})`));
  client.on("error", (e) => say(notice, e.code === "token_invalid" ? `Cannot sign in: ${e.message}` : reason(e), "error"));
  client.on("connect", () => {
    const el = document.getElementById(notice);
    if (el?.dataset.kind === "error") say(notice, "");
  });
}

type Child = Node | string | number | null | undefined | false;
interface Props {
  class?: string;
  id?: string;
  title?: string;
  type?: string;
  name?: string;
  value?: string;
  placeholder?: string;
  disabled?: boolean;
  checked?: boolean;
  hidden?: boolean;
  min?: string;
  max?: string;
  step?: string;
  required?: boolean;
  autocomplete?: string;
  for?: string;
  data?: Record<string, string>;
  on?: Partial<Record<keyof HTMLElementEventMap, (e: Event) => void>>;
}

/** An element with text children: strings become text nodes, never markup. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  const { class: cls, data, on, for: htmlFor, ...rest } = props;
  if (cls) el.className = cls;
  if (htmlFor) el.setAttribute("for", htmlFor);
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) (el as unknown as Record<string, unknown>)[k] = v;
  for (const [k, v] of Object.entries(data ?? {})) el.dataset[k] = v;
  for (const [k, f] of Object.entries(on ?? {})) if (f) el.addEventListener(k, f);
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace the children of #id. */
export function fill(id: string, ...children: Child[]): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`no #${id}`);
  el.replaceChildren();
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A QR code of `text` as an image (a GIF data URL: allowed by img-src data:). */
export function qr(text: string, label: string): HTMLImageElement {
  const img = h("img", { class: "qr", title: label });
  img.alt = label;
  img.src = encodeQR(text, "data-url", { ecc: "medium", scale: 4, border: 2 });
  return img;
}

/** 12,345 pts. By hand: the first Intl number format of a page costs tens of milliseconds
 *  (its locale data is loaded then), which the first render would wait for. */
export const points = (n: number): string => `${String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",")} pts`;
export const money = (minor: number): string => (minor / 100).toFixed(2);
export const day = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

/** A message for a failed request, as the person in front of the page needs it. */
export function reason(err: unknown): string {
  if (err instanceof GatewayError) {
    const known: Record<string, string> = {
      insufficient_points: "Not enough points.",
      member_not_found: "No such member.",
      code_not_found: "No such code.",
      code_already_redeemed: "That code was already used.",
      code_expired: "That code has expired.",
      code_voided: "That code was voided.",
      verification_failed: "That code is not right, or has expired.",
      identity_in_use: "That address belongs to another member.",
      rate_limited: "Too many tries: wait a little.",
      request_timeout: "No answer yet: try again.",
      connection_lost: "The connection was lost: try again.",
    };
    return known[err.code] ?? `${err.message} (${err.code})`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Show `text` in #id for a while (role=status, so screen readers hear it). */
export function say(id: string, text: string, kind: "ok" | "error" = "ok"): void {
  const el = fill(id, text);
  el.dataset.kind = kind;
}
