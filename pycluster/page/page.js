// The live page of a pycluster node: polls /view (and a page of names and groups) once a
// second and draws it. Every value from the cluster is set as text (textContent or an
// attribute), never parsed as HTML: names, metadata and reasons are user-supplied.
"use strict";

const POLL_MS = 1000;
const PAGE_SIZE = 100;
const FILTER_DELAY_MS = 250;
const TOKEN_KEY = "pycluster.http.token";

const pages = {
  names: { query: "", offset: 0, matched: 0 },
  groups: { query: "", offset: 0, matched: 0 },
};

// -- fetching -------------------------------------------------------------------------------

class Unauthorized extends Error {}

let declined = false;

function askToken() {
  // One prompt for the parallel requests that were all refused (prompt() blocks the page,
  // so the others see the new token stored when they get their turn).
  if (declined) throw new Unauthorized("this node needs its HTTP token: reload the page to enter it");
  const given = window.prompt("This node's HTTP token (node.http.token):");
  if (!given) {
    declined = true;
    throw new Unauthorized("this node needs its HTTP token: reload the page to enter it");
  }
  sessionStorage.setItem(TOKEN_KEY, given.trim());
}

async function getJSON(path) {
  // Asks for the token once (kept for this tab only), and again if the node refuses it.
  for (let attempt = 0; attempt < 3; attempt++) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status !== 401) {
      if (!response.ok) throw new Error(`${path} answered HTTP ${response.status}`);
      return response.json();
    }
    if (sessionStorage.getItem(TOKEN_KEY) === token) askToken();
  }
  throw new Unauthorized("the node refused the token");
}

function pageURL(kind) {
  const state = pages[kind];
  const query = new URLSearchParams({ q: state.query, offset: state.offset, limit: PAGE_SIZE });
  return `/view/${kind}?${query}`;
}

// -- drawing helpers ------------------------------------------------------------------------

function el(tag, text, attributes) {
  const element = document.createElement(tag);
  if (text !== undefined && text !== null) element.textContent = String(text);
  for (const [name, value] of Object.entries(attributes || {})) {
    element.setAttribute(name, String(value));
  }
  return element;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${(value * 1000).toFixed(1)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  if (value < 7200) return `${(value / 60).toFixed(1)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

function clock(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

// -- sections -------------------------------------------------------------------------------

function drawNodes(view) {
  const cards = view.nodes.map((node) => {
    const card = el("div", null, { class: "node", "data-node": node.name, "data-state": node.state });
    card.append(el("div", node.name, { class: "name" }));
    card.append(el("div", node.self ? `${node.state} · this node` : node.state, { class: "state" }));
    const facts = el("dl");
    const add = (label, value) => {
      if (value === null || value === undefined) return;
      facts.append(el("dt", label), el("dd", value));
    };
    if (node.answered) {
      add("incarnation", node.incarnation.slice(0, 12));
      add("uptime", seconds(node.uptime));
      add("loop lag", seconds(node.lag));
      add("peers", node.peers.length);
      add("actors", node.actors);
      const silent = Object.values(node.ticks)
        .map((tick) => tick.silent)
        .filter((value) => value !== null);
      add("tick timeout", seconds(node.tick_timeout));
      if (silent.length) add("longest silence", seconds(Math.max(...silent)));
    }
    add("answered in", node.rtt === null ? null : seconds(node.rtt));
    add("not answering", node.error);
    add("down since", node.down_since === null ? null : clock(node.down_since));
    add("reason", node.reason);
    card.append(facts);
    return card;
  });
  document.getElementById("nodes").replaceChildren(...cards);
}

function drawLinks(view) {
  const names = view.nodes.map((node) => node.name);
  const table = document.getElementById("links");
  const head = el("tr");
  head.append(el("th", "sees ↓ / seen →"));
  for (const name of names) head.append(el("th", name, { class: "col", scope: "col", title: name }));
  const rows = [el("thead"), el("tbody")];
  rows[0].append(head);
  for (const from of view.nodes) {
    const row = el("tr", null, { "data-from": from.name });
    row.append(el("th", from.name, { class: "row", scope: "row" }));
    const peers = new Set(from.peers || []);
    for (const to of names) {
      let link;
      if (to === from.name) link = "self";
      else if (!from.answered) link = "unknown";
      else link = peers.has(to) ? "up" : "missing";
      const mark = { self: "—", unknown: "?", up: "●", missing: "✕" }[link];
      const title = {
        self: from.name,
        unknown: `${from.name} did not answer`,
        up: `${from.name} sees ${to}`,
        missing: `${from.name} does not see ${to}`,
      }[link];
      row.append(el("td", mark, { "data-from": from.name, "data-to": to, "data-link": link, title }));
    }
    rows[1].append(row);
  }
  table.replaceChildren(...rows);
}

function drawTopologies(view) {
  const rows = Object.entries(view.topologies).map(([name, topology]) => {
    const row = el("tr", null, {
      "data-topology": name,
      "data-state": topology.state,
      "data-problem": topology.problem !== null || topology.state === "failed",
    });
    row.append(
      el("td", name),
      el("td", topology.strategy),
      el("td", topology.state),
      el("td", topology.crashes),
      el("td", topology.problem ?? topology.last_error ?? ""),
    );
    return row;
  });
  if (!rows.length) {
    const none = el("tr");
    none.append(el("td", "no topologies", { colspan: 5 }));
    rows.push(none);
  }
  document.querySelector("#topologies tbody").replaceChildren(...rows);
}

function drawRegistry(view) {
  const registry = view.registry;
  document.getElementById("registry-summary").textContent =
    `${registry.names} names, ${registry.groups} groups (${registry.members} memberships), ` +
    `${registry.ring.actors} ring actors (${registry.ring.misplaced} not on their owner); ` +
    `backend ${registry.backend}, ${registry.synced ? "synced" : "not yet synced"}`;
  const nodes = new Set([...Object.keys(registry.names_by_node), ...Object.keys(registry.ring.by_node)]);
  const rows = [...nodes].sort().map((node) => {
    const ring = registry.ring.by_node[node] || { owns: 0, runs: 0 };
    const row = el("tr", null, { "data-node": node });
    row.append(el("td", node), el("td", registry.names_by_node[node] || 0), el("td", ring.owns), el("td", ring.runs));
    return row;
  });
  document.querySelector("#ring tbody").replaceChildren(...rows);
}

function drawPageInfo(kind, page) {
  pages[kind].matched = page.matched;
  const shown = page[kind].length;
  const first = shown ? page.offset + 1 : 0;
  document.getElementById(`${kind}-info`).textContent =
    `${first}–${page.offset + shown} of ${page.matched}` +
    (page.matched === page.total ? "" : ` matching (${page.total} in all)`);
  document.getElementById(`${kind}-prev`).disabled = page.offset === 0;
  document.getElementById(`${kind}-next`).disabled = page.offset + shown >= page.matched;
}

function drawNames(page) {
  const rows = page.names.map((entry) => {
    const row = el("tr", null, { "data-name": entry.name, "data-node": entry.node });
    const placement = entry.placement === "ring" ? `ring (owner ${entry.owner ?? "none"})` : entry.placement;
    row.append(
      el("td", entry.name, { class: "name" }),
      el("td", entry.scope),
      el("td", entry.node),
      el("td", placement),
      el("td", entry.meta ?? ""),
    );
    return row;
  });
  document.querySelector("#names tbody").replaceChildren(...rows);
  drawPageInfo("names", page);
}

function drawGroups(page) {
  const rows = page.groups.map((group) => {
    const row = el("tr", null, { "data-group": group.name });
    const members = group.members.map((member) => `${member.node}/${member.actor}`).join(", ");
    row.append(
      el("td", group.name, { class: "name" }),
      el("td", group.scope),
      el("td", group.count),
      el("td", members + (group.count > group.members.length ? ", …" : "")),
    );
    return row;
  });
  document.querySelector("#groups tbody").replaceChildren(...rows);
  drawPageInfo("groups", page);
}

function drawEvents(view) {
  const items = view.events
    .slice()
    .reverse()
    .map((event) => {
      const item = el("li", null, { "data-kind": event.kind, "data-seq": event.seq });
      item.append(el("time", clock(event.at)), document.createTextNode(event.text));
      return item;
    });
  document.getElementById("events").replaceChildren(...items);
}

// -- the loop -------------------------------------------------------------------------------

let timer = null;
let running = false;
let again = false;

async function refresh() {
  // One refresh at a time: a click during one runs another right after it.
  if (running) {
    again = true;
    return;
  }
  running = true;
  clearTimeout(timer);
  const status = document.getElementById("status");
  try {
    const [view, names, groups] = await Promise.all([
      getJSON("/view"),
      getJSON(pageURL("names")),
      getJSON(pageURL("groups")),
    ]);
    document.getElementById("self-name").textContent = view.node;
    document.title = `pycluster · ${view.node}`;
    drawNodes(view);
    drawLinks(view);
    drawTopologies(view);
    drawRegistry(view);
    drawNames(names);
    drawGroups(groups);
    drawEvents(view);
    status.textContent = `updated ${clock(view.built_at)} (built in ${seconds(view.build_seconds)})`;
    document.body.dataset.stale = "false";
    document.body.dataset.ready = "true";
    document.body.dataset.builtAt = view.built_at;
  } catch (error) {
    status.textContent = `not updated: ${error.message}`;
    document.body.dataset.stale = "true";
  } finally {
    running = false;
    timer = setTimeout(refresh, again ? 0 : POLL_MS);
    again = false;
  }
}

function pager(kind) {
  let delay = null;
  document.getElementById(`${kind}-filter`).addEventListener("input", (event) => {
    clearTimeout(delay);
    delay = setTimeout(() => {
      pages[kind].query = event.target.value;
      pages[kind].offset = 0;
      refresh();
    }, FILTER_DELAY_MS);
  });
  document.getElementById(`${kind}-prev`).addEventListener("click", () => {
    pages[kind].offset = Math.max(0, pages[kind].offset - PAGE_SIZE);
    refresh();
  });
  document.getElementById(`${kind}-next`).addEventListener("click", () => {
    if (pages[kind].offset + PAGE_SIZE < pages[kind].matched) pages[kind].offset += PAGE_SIZE;
    refresh();
  });
}

pager("names");
pager("groups");
refresh();
