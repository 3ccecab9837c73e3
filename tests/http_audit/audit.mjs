// Runs graphql-http's server audits against the GraphQL endpoint at the URL given
// as the only argument and prints one JSON array of results on stdout. Judging the
// results is the caller's business, so any completed audit run exits 0.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <url of the GraphQL endpoint>');
  process.exit(2);
}

// Enough of a failing response to see why it failed without dumping a whole page.
const BODY_EXCERPT = 500;

async function describe(response) {
  let body;
  try {
    body = (await response.clone().text()).slice(0, BODY_EXCERPT);
  } catch {
    // Some audits read the body before they fail on it.
    body = null;
  }
  return {
    status: response.status,
    contentType: response.headers.get('content-type'),
    body,
  };
}

const results = await auditServer({ url });
const report = await Promise.all(
  results.map(async (result) => ({
    id: result.id,
    name: result.name,
    status: result.status,
    reason: result.status === 'ok' ? null : result.reason,
    response: result.status === 'ok' ? null : await describe(result.response),
  })),
);
process.stdout.write(JSON.stringify(report));
