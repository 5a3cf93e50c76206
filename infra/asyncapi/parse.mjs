// Parses an AsyncAPI document with the official parser and prints its diagnostics as JSON:
//   node infra/asyncapi/parse.mjs schemas/asyncapi.json
// One line on stdout: {"parser": <version>, "parsed": <bool>, "diagnostics": [...]}, each
// diagnostic with its severity name, code, message and JSON path. Exits 0 whenever the parser
// ran (the caller judges the diagnostics), 2 when it could not run at all.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

import { Parser, fromFile } from "@asyncapi/parser";

const SEVERITIES = ["error", "warning", "information", "hint"];

const [file] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: node parse.mjs <asyncapi.json>\n");
  process.exit(2);
}
const require = createRequire(import.meta.url);
const version = JSON.parse(
  readFileSync(require.resolve("@asyncapi/parser/package.json"), "utf8"),
).version;

const { document, diagnostics } = await fromFile(new Parser(), resolve(file)).parse();
const report = {
  parser: version,
  parsed: document !== undefined,
  diagnostics: diagnostics.map((d) => ({
    severity: SEVERITIES[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.join("/"),
  })),
};
process.stdout.write(JSON.stringify(report) + "\n");
