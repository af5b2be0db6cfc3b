// src/frames.ts is generated from protocol/asyncapi.json: it must be current. And the small
// pure parts of the client: backoff, the close code rule, reading a token's expiry.
import { readFile } from "node:fs/promises";
import { describe, expect, test } from "vitest";
import { OUT, generate } from "../scripts/gen-frames.mjs";
import {
  CloseCode,
  ErrorCode,
  RETRYABLE_ERRORS,
  backoff,
  shouldReconnect,
  tokenExpiry,
} from "../src/index.js";

test("src/frames.ts is what protocol/asyncapi.json generates (else: npm run gen)", async () => {
  expect(await readFile(OUT, "utf8")).toBe(await generate());
});

test("the constants come from the spec", () => {
  expect(CloseCode.TOKEN_EXPIRED).toBe(3501);
  expect(ErrorCode.INSUFFICIENT_POINTS).toBe("insufficient_points");
  expect(RETRYABLE_ERRORS).toContain("timeout");
  expect(RETRYABLE_ERRORS).not.toContain("forbidden");
});

describe("backoff", () => {
  test("full jitter between the minimum and the doubled step, capped", () => {
    expect(backoff(0, 500, 20_000, () => 0)).toBe(500);
    expect(backoff(0, 500, 20_000, () => 1)).toBe(1000);
    expect(backoff(3, 500, 20_000, () => 1)).toBe(4500);
    expect(backoff(10, 500, 20_000, () => 1)).toBe(20_000);
    expect(backoff(1000, 500, 20_000, () => 0.5)).toBe(10_500);
  });
});

test("close codes: 3000-3499 and others reconnect, 3500-3999 do not, except 3501", () => {
  for (const code of [1000, 1001, 1006, 1009, 3000, 3003, 3008, 3499, 4000])
    expect(shouldReconnect(code)).toBe(true);
  for (const code of [3500, 3502, 3503, 3504, 3505, 3999]) expect(shouldReconnect(code)).toBe(false);
  expect(shouldReconnect(3501)).toBe(true);
});

test("a token's expiry is read from its exp claim, base64url and unpadded", () => {
  const body = Buffer.from(JSON.stringify({ exp: 1_795_520_000, sub: "m-?>" })).toString("base64url");
  expect(tokenExpiry(`eyJhbGciOiJIUzI1NiJ9.${body}.sig`)).toBe(1_795_520_000_000);
  expect(tokenExpiry("opaque")).toBeNull();
});
