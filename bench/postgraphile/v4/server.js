// PostGraphile 4 as one Node process: node server.js DATABASE_URL PORT
"use strict";
const http = require("node:http");
const { postgraphile } = require("postgraphile");

const [databaseUrl, port] = process.argv.slice(2);

// Production settings: no schema watching, no GraphiQL, no per-query log line, which
// would otherwise be part of what is measured.
const handler = postgraphile(databaseUrl, "public", {
  graphiql: false,
  watchPg: false,
  disableQueryLog: true,
  retryOnInitFail: false,
  ignoreRBAC: false,
});

const server = http.createServer(handler);
server.listen(Number(port), "127.0.0.1");
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
