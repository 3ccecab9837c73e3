// GraphiQL on the gateway's own /graphql, over HTTP for queries and mutations and over a
// WebSocket (graphql-transport-ws, on the same path) for subscriptions. React, ReactDOM,
// GraphiQL and the explorer plugin are the vendored UMD builds loaded before this file.
"use strict";

(function () {
  const endpoint = new URL("/graphql", location.href);
  const socket = new URL(endpoint);
  socket.protocol = location.protocol === "https:" ? "wss:" : "ws:";

  // The editors' contents are kept in the address (q, variables), so a link opens the same
  // operation. Not "query": GET /graphql?query=… runs the query instead of opening GraphiQL.
  const parameters = new URLSearchParams(location.search);

  function remember(name, value) {
    if (value) {
      parameters.set(name, value);
    } else {
      parameters.delete(name);
    }
    const search = parameters.toString();
    history.replaceState(null, "", search ? "?" + search : location.pathname);
  }

  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({ url: endpoint.href, subscriptionUrl: socket.href }),
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      query: parameters.get("q") ?? undefined,
      variables: parameters.get("variables") ?? undefined,
      onEditQuery: (query) => remember("q", query),
      onEditVariables: (variables) => remember("variables", variables),
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      inputValueDeprecation: true,
    }),
  );
})();
