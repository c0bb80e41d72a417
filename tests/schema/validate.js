// Validates a JSON document (read from stdin) against a JSON Schema (draft 2020-12).
// Usage: node validate.js <schema.json> < document.json
// Exit 0: valid. Exit 1: invalid (one error per line on stderr). Exit 2: usage/schema problem.
// Called by tests/packaging.rs, which converts compose.outpost.yaml to JSON first.
"use strict";
const fs = require("fs");
const Ajv2020 = require("ajv/dist/2020");

function main() {
  const schemaPath = process.argv[2];
  if (!schemaPath) {
    console.error("usage: node validate.js <schema.json> < document.json");
    return 2;
  }
  let schema, doc;
  try {
    schema = JSON.parse(fs.readFileSync(schemaPath, "utf8"));
    doc = JSON.parse(fs.readFileSync(0, "utf8"));
  } catch (e) {
    console.error(`cannot read input: ${e.message}`);
    return 2;
  }
  // strict: false because ajv's strict mode rejects the upstream schema's style (e.g.
  // "properties" without "type": "object"), not because of anything in the document.
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  let validate;
  try {
    validate = ajv.compile(schema);
  } catch (e) {
    console.error(`schema does not compile: ${e.message}`);
    return 2;
  }
  if (validate(doc)) {
    console.log("valid");
    return 0;
  }
  for (const err of validate.errors) {
    const extra = err.params && Object.keys(err.params).length ? ` ${JSON.stringify(err.params)}` : "";
    console.error(`${err.instancePath || "/"}: ${err.message}${extra}`);
  }
  return 1;
}

process.exitCode = main();
