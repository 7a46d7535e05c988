#!/usr/bin/env node
// Validators for deploy/, driven by tests/e2e/test_deploy.py. Reads one JSON
// request on stdin, writes one JSON answer on stdout:
//   {"op": "compose", "doc": {...}}          compose-spec JSON schema (the one dclint ships)
//   {"op": "k8s", "docs": [{...}, ...]}      Kubernetes OpenAPI schemas (kubernetes-models),
//                                            then a strict pass: TypeScript's excess-property
//                                            check against the same models' types, which
//                                            rejects unknown fields as `kubeconform -strict` does
//   {"op": "dockerfile", "text": "..."}      dockerfile-utils diagnostics
//   {"op": "dashboard", "doc": {...}}        Grafana's dashboard schema types (@grafana/schema)
//   {"op": "traceql", "queries": ["..."]}    TraceQL grammar (@grafana/lezer-traceql)
"use strict";
const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");

const HERE = __dirname;

function compose(doc) {
  const Ajv = require("ajv");
  const schema = JSON.parse(
    fs.readFileSync(path.join(HERE, "node_modules/dclint/schemas/compose.schema.json"), "utf8"));
  // The schema names its draft with an https URL, which Ajv does not register
  // under that name: the draft-07 rules apply all the same.
  const ajv = new Ajv({ allErrors: true, strict: false, validateSchema: false });
  require("ajv-formats")(ajv);
  const validate = ajv.compile(schema);
  const ok = validate(doc);
  return { ok, schema: schema.$id, errors: ok ? [] : validate.errors.map(
    (e) => `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`) };
}

// kubernetes-models module and type name of each kind the manifests use.
const MODELS = {
  "v1/Namespace": ["kubernetes-models/v1/Namespace", "Namespace"],
  "v1/ServiceAccount": ["kubernetes-models/v1/ServiceAccount", "ServiceAccount"],
  "v1/ConfigMap": ["kubernetes-models/v1/ConfigMap", "ConfigMap"],
  "v1/Service": ["kubernetes-models/v1/Service", "Service"],
  "apps/v1/DaemonSet": ["kubernetes-models/apps/v1/DaemonSet", "DaemonSet"],
  "apps/v1/Deployment": ["kubernetes-models/apps/v1/Deployment", "Deployment"],
};

function k8s(docs) {
  const results = docs.map((doc) => {
    const key = `${doc.apiVersion}/${doc.kind}`;
    const model = MODELS[key];
    if (!model) return { key, ok: false, errors: [`no model for ${key}`] };
    const Cls = require(model[0])[model[1]];
    try {
      new Cls(doc).validate();
      return { key, ok: true, errors: [] };
    } catch (e) {
      return { key, ok: false, errors: [String(e.message)] };
    }
  });
  // Strict pass: each object as a typed literal; tsc reports unknown fields
  // (excess properties) and wrong types, with the line of the offending key.
  // Inside this directory, so that module resolution finds node_modules/.
  const dir = fs.mkdtempSync(path.join(HERE, ".tsc-"));
  const lines = [];
  docs.forEach((doc, i) => {
    const model = MODELS[`${doc.apiVersion}/${doc.kind}`];
    if (!model) return;
    lines.push(`import type { I${model[1]} as T${i} } from ${JSON.stringify(model[0])};`);
    lines.push(`export const doc${i}: T${i} = ${JSON.stringify(doc, null, 2)};`);
  });
  const file = path.join(dir, "manifests.ts");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  return { results, strict: tsc(dir, file) };
}

// A Grafana dashboard against Grafana's own schema types (@grafana/schema):
// unknown fields and wrong types fail. String enums (e.g. ThresholdsMode) are
// compared by value, as in the JSON.
function grafanaDashboard(doc) {
  const dir = fs.mkdtempSync(path.join(HERE, ".tsc-"));
  const file = path.join(dir, "dashboard.ts");
  fs.writeFileSync(file, [
    'import type { Dashboard } from "@grafana/schema";',
    "type Loose<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T",
    "  : T extends Array<infer U> ? Array<Loose<U>> : T extends object ? { [K in keyof T]: Loose<T[K]> }",
    "  : T;",
    `export const dashboard: Loose<Dashboard> = ${JSON.stringify(doc, null, 2)};`,
    ""].join("\n"));
  return tsc(dir, file);
}

function tsc(dir, file) {
  let result = { ok: true, output: "" };
  try {
    execFileSync(process.execPath, [path.join(HERE, "node_modules/typescript/bin/tsc"),
      "--noEmit", "--strict", "--skipLibCheck", "--module", "node16",
      "--moduleResolution", "node16", "--target", "es2020", file],
      { cwd: HERE, encoding: "utf8" });
  } catch (e) {
    result = { ok: false, output: String(e.stdout) + String(e.stderr) };
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return result;
}

function dockerfile(text) {
  const utils = require("dockerfile-utils");
  return { diagnostics: utils.validate(text).map((d) => ({
    line: d.range.start.line + 1, severity: d.severity, code: d.code, message: d.message })) };
}

async function traceql(queries) {
  const { parser } = await import("@grafana/lezer-traceql");
  return { results: queries.map((q) => {
    const errors = [];
    parser.parse(q).iterate({ enter: (n) => {
      if (n.type.isError) errors.push(n.from);
    } });
    return { query: q, errors };
  }) };
}

async function main() {
  const req = JSON.parse(fs.readFileSync(0, "utf8"));
  let out;
  switch (req.op) {
    case "compose": out = compose(req.doc); break;
    case "k8s": out = k8s(req.docs); break;
    case "dockerfile": out = dockerfile(req.text); break;
    case "dashboard": out = grafanaDashboard(req.doc); break;
    case "traceql": out = await traceql(req.queries); break;
    default: throw new Error(`unknown op ${req.op}`);
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => { process.stderr.write(String(e.stack || e) + "\n"); process.exit(1); });
