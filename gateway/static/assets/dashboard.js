// The live dashboard: the leaderboard (subscription topReports) and one report's counters
// (subscription reportStats), with a chart of that report's views as they arrive.
//
// Both subscriptions share one WebSocket to /graphql (graphql-transport-ws), through the
// vendored graphql-ws client (the global graphqlWs): it speaks the protocol, pings, and
// after the socket drops connects again and subscribes again to whatever is still
// followed. This file chooses when to retry (exponential backoff with a cap) and shows it.
"use strict";

(function () {
  const ENDPOINT = new URL("/graphql", location.href);
  const SOCKET = new URL(ENDPOINT);
  SOCKET.protocol = location.protocol === "https:" ? "wss:" : "ws:";

  const FIRST_RETRY_MS = 500;
  const RETRY_CAP_MS = 10000;
  const KEEP_ALIVE_MS = 10000;
  const CHART_SPAN_MS = 5 * 60 * 1000;
  const RATE_SPAN_MS = 60 * 1000;
  const BOARD_SIZE = 10;

  const BOARD = `subscription Board($by: ReportCounter!, $limit: Int!) {
    topReports(by: $by, limit: $limit) { id databaseId title stats { views downloads } }
  }`;
  const STATS = `subscription Stats($id: ID!) {
    reportStats(reportId: $id) { views downloads }
  }`;
  const FIND = `query Find($id: ID!) { report(id: $id) { id databaseId title } }`;

  const byId = (id) => document.getElementById(id);
  const statusBadge = byId("status");
  const boardBody = document.querySelector("#board tbody");
  const chart = byId("chart");
  const SVG = "http://www.w3.org/2000/svg";
  const number = new Intl.NumberFormat("en");

  // Between 1/2 and all of min(cap, first · 2^retries): many dashboards whose gateway
  // restarted do not all come back in the same instant.
  function backoff(retries) {
    const ceiling = Math.min(RETRY_CAP_MS, FIRST_RETRY_MS * 2 ** retries);
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  function showStatus(state, text) {
    statusBadge.dataset.state = state;
    statusBadge.textContent = text;
    document.body.dataset.connection = state;
  }

  let everConnected = false;
  const client = graphqlWs.createClient({
    url: SOCKET.href,
    keepAlive: KEEP_ALIVE_MS,
    retryAttempts: Infinity,
    // A gateway that restarts or is unreachable is retried, whatever the close said.
    shouldRetry: () => true,
    retryWait: (retries) => {
      const delay = backoff(retries);
      showStatus("reconnecting", `Offline · retrying in ${Math.ceil(delay / 1000)} s`);
      return new Promise((resolve) => setTimeout(resolve, delay));
    },
    on: {
      connecting: () =>
        showStatus(
          everConnected ? "reconnecting" : "connecting",
          everConnected ? "Reconnecting…" : "Connecting…",
        ),
      connected: () => {
        everConnected = true;
        showStatus("connected", "Live");
      },
      closed: () => {
        if (everConnected) showStatus("reconnecting", "Offline");
      },
    },
  });

  // A subscription, subscribed again after a backoff if the socket fails it for good (the
  // client retries sockets, not a subscription the server closed with an error code).
  // Errors of the operation itself go to problem(): the same operation would fail again.
  function follow(query, variables, { data, complete, problem }) {
    let dispose = null;
    let failures = 0;
    let stopped = false;
    function start() {
      dispose = client.subscribe(
        { query, variables },
        {
          next: (result) => {
            failures = 0;
            if (result.errors) problem(result.errors.map((error) => error.message).join("; "));
            if (result.data) data(result.data);
          },
          error: (error) => {
            if (Array.isArray(error)) {
              problem(error.map((each) => each.message).join("; "));
              return;
            }
            showStatus("error", `Refused: ${error.reason || error.message || error}`);
            if (!stopped) setTimeout(start, backoff(failures++));
          },
          complete: () => {
            if (!stopped && complete) complete();
          },
        },
      );
    }
    start();
    return () => {
      stopped = true;
      if (dispose) dispose();
    };
  }

  // The leaderboard.
  let boardBy = "VIEWS";
  let stopBoard = null;
  let watched = null;

  function followBoard() {
    if (stopBoard) stopBoard();
    stopBoard = follow(
      BOARD,
      { by: boardBy, limit: BOARD_SIZE },
      {
        data: (data) => drawBoard(data.topReports),
        problem: (message) => (byId("board-error").textContent = message),
      },
    );
  }

  // Show a counter's value, highlighted when it changed from one it showed before.
  function bump(cell, value) {
    const before = cell.dataset.value;
    if (before === String(value)) return;
    cell.dataset.value = String(value);
    cell.textContent = number.format(value);
    if (before !== undefined) {
      cell.classList.remove("bumped");
      void cell.offsetWidth; // restart the highlight's animation
      cell.classList.add("bumped");
    }
  }

  function drawBoard(reports) {
    const rows = new Map([...boardBody.rows].map((row) => [row.dataset.reportId, row]));
    reports.forEach((report, index) => {
      let row = rows.get(report.id);
      if (!row) {
        row = boardBody.insertRow();
        row.dataset.reportId = report.id;
        row.tabIndex = 0;
        for (const name of ["rank", "title", "views number", "downloads number"]) {
          row.insertCell().className = name;
        }
        row.addEventListener("click", () => watch(row.report));
        row.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") watch(row.report);
        });
      }
      rows.delete(report.id);
      row.report = report;
      row.cells[0].textContent = String(index + 1);
      row.cells[1].textContent = report.title;
      row.cells[1].title = `Report #${report.databaseId}`;
      bump(row.cells[2], report.stats.views);
      bump(row.cells[3], report.stats.downloads);
      row.classList.toggle("selected", watched !== null && watched.id === report.id);
      boardBody.appendChild(row); // in the board's order
    });
    for (const gone of rows.values()) gone.remove();
    byId("board-empty").hidden = reports.length > 0;
    if (watched === null && reports.length > 0) watch(reports[0]);
  }

  for (const button of document.querySelectorAll(".switch button")) {
    button.addEventListener("click", () => {
      boardBy = button.dataset.by;
      for (const other of document.querySelectorAll(".switch button")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      followBoard();
    });
  }

  // The watched report: its counters, and its views over time.
  let stopWatching = null;
  let series = [];

  function watch(report) {
    if (stopWatching) stopWatching();
    watched = report;
    series = [];
    for (const figure of [byId("watched-views"), byId("watched-downloads")]) {
      delete figure.dataset.value;
      figure.textContent = "–";
    }
    byId("watched-name").textContent = report.title;
    byId("watched-name").classList.remove("muted");
    for (const row of boardBody.rows)
      row.classList.toggle("selected", row.dataset.reportId === report.id);
    stopWatching = follow(
      STATS,
      { id: report.id },
      {
        data: (data) => {
          const stats = data.reportStats;
          bump(byId("watched-views"), stats.views);
          bump(byId("watched-downloads"), stats.downloads);
          // A value sent again (after a reconnection, or for downloads) is no new view.
          const last = series[series.length - 1];
          if (!last || last.views !== stats.views) {
            series.push({ at: Date.now(), views: stats.views });
          }
          drawChart();
        },
        complete: () => (byId("watched-name").textContent = `${report.title} (deleted)`),
        problem: (message) => (byId("watch-error").textContent = message),
      },
    );
    drawChart();
  }

  byId("watch").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = byId("watch-error");
    error.textContent = "";
    const id = byId("watch-id").value.trim();
    if (!id) return;
    try {
      const response = await fetch(ENDPOINT, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ query: FIND, variables: { id } }),
      });
      const body = await response.json();
      if (body.data && body.data.report) {
        watch(body.data.report);
        byId("watch-id").value = "";
      } else {
        error.textContent = body.errors ? body.errors[0].message : "No such report.";
      }
    } catch (failure) {
      error.textContent = `The gateway did not answer: ${failure.message}`;
    }
  });

  // The chart, in SVG: the views of the watched report over the last CHART_SPAN_MS, a step
  // line with a dot for each value received, sliding left as time passes.
  const PLOT = { left: 56, right: 624, top: 16, bottom: 228 };

  function element(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceStep(span) {
    const raw = Math.max(span, 1) / 4;
    const power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10]
      .map((factor) => factor * power)
      .find((candidate) => candidate >= raw);
    return Math.max(1, step);
  }

  function viewsBefore(moment) {
    let value = series.length ? series[0].views : 0;
    for (const point of series) {
      if (point.at > moment) break;
      value = point.views;
    }
    return value;
  }

  function drawChart() {
    const now = Date.now();
    const start = now - CHART_SPAN_MS;
    // Keep the last point before the window: the line starts at its value.
    while (series.length > 1 && series[1].at < start) series.shift();
    const shown = series.filter((point) => point.at >= start);
    const values = series.map((point) => point.views);
    const step = niceStep(values.length ? Math.max(...values) - Math.min(...values) : 0);
    const low = values.length ? Math.floor(Math.min(...values) / step) * step : 0;
    const high = Math.max(
      low + step,
      values.length ? Math.ceil(Math.max(...values) / step) * step : step,
    );
    const x = (at) =>
      PLOT.left + ((Math.max(at, start) - start) / CHART_SPAN_MS) * (PLOT.right - PLOT.left);
    const y = (views) => PLOT.bottom - ((views - low) / (high - low)) * (PLOT.bottom - PLOT.top);

    const nodes = [];
    for (let tick = low; tick <= high; tick += step) {
      nodes.push(
        element("line", { class: "grid", x1: PLOT.left, x2: PLOT.right, y1: y(tick), y2: y(tick) }),
      );
      nodes.push(
        element(
          "text",
          { class: "axis", x: PLOT.left - 8, y: y(tick) + 4, "text-anchor": "end" },
          number.format(tick),
        ),
      );
    }
    for (let minutes = 5; minutes >= 0; minutes -= 1) {
      const at = now - minutes * 60 * 1000;
      const label = minutes === 0 ? "now" : `−${minutes} min`;
      nodes.push(
        element(
          "text",
          { class: "axis", x: x(at), y: PLOT.bottom + 22, "text-anchor": "middle" },
          label,
        ),
      );
    }
    if (series.length) {
      let path = `M ${x(series[0].at)} ${y(series[0].views)}`;
      for (const point of series.slice(1)) path += ` H ${x(point.at)} V ${y(point.views)}`;
      path += ` H ${x(now)}`;
      const area = `${path} V ${PLOT.bottom} H ${x(series[0].at)} Z`;
      nodes.push(element("path", { class: "area", d: area }));
      nodes.push(element("path", { class: "line", d: path }));
      for (const point of shown) {
        nodes.push(
          element("circle", { class: "point", cx: x(point.at), cy: y(point.views), r: 4 }),
        );
      }
    } else {
      nodes.push(
        element(
          "text",
          { class: "axis", x: (PLOT.left + PLOT.right) / 2, y: 120, "text-anchor": "middle" },
          "Waiting for the first value…",
        ),
      );
    }
    chart.replaceChildren(...nodes);
    chart.dataset.points = String(shown.length);
    const latest = series.length ? series[series.length - 1].views : null;
    byId("watched-rate").textContent =
      latest === null ? "–" : number.format(latest - viewsBefore(now - RATE_SPAN_MS));
  }

  setInterval(drawChart, 1000);
  followBoard();
})();
