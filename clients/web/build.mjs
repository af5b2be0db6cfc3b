// npm run build [-- --out DIR]: the pages' scripts, one minified bundle each (the client from
// ../js/src and the qr encoder inside), written to gateway/web/static (committed: the node
// serves them as they are, with no build at run time). Prints each bundle's size, raw and
// gzipped. tests/web/test_bundles.py builds into a scratch directory and compares.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = fileURLToPath(new URL(".", import.meta.url));
const i = process.argv.indexOf("--out");
const out = i > 0 ? process.argv[i + 1] : `${root}/../../gateway/web/static`;
for (const page of ["wallet", "console"]) {
  await build({
    entryPoints: [`${root}/src/${page}.ts`],
    outfile: `${out}/${page}.js`,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    minify: true,
    legalComments: "none",
    charset: "utf8",
  });
  const js = readFileSync(`${out}/${page}.js`);
  const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
  console.log(`${page}.js: ${kb(js.length)} minified, ${kb(gzipSync(js, { level: 9 }).length)} gzipped`);
}
