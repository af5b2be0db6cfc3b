// npm run build: dist/client.min.js (one minified ESM bundle for browsers, no dependencies)
// and the declarations (tsc --emitDeclarationOnly); prints the bundle's size, raw and gzipped.
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
rmSync(`${root}/dist`, { recursive: true, force: true });
await build({
  entryPoints: [`${root}/src/index.ts`],
  outfile: `${root}/dist/client.min.js`,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  minify: true,
  sourcemap: true,
  legalComments: "none",
});
execFileSync(
  process.execPath,
  [`${root}/node_modules/typescript/bin/tsc`, "-p", root, "--emitDeclarationOnly"],
  {
    stdio: "inherit",
  },
);
const js = readFileSync(`${root}/dist/client.min.js`);
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
console.log(
  `dist/client.min.js: ${kb(js.length)} minified, ${kb(gzipSync(js, { level: 9 }).length)} gzipped`,
);
