// The web view: polls /api/topics every two seconds, keeps the last minutes of counters in memory to draw rates, and
// offers peek and redrive for dead-letter topics. No framework, no build step.
"use strict";

const POLL_MS = 2000;
const HISTORY_POINTS = 90;  // three minutes at one point every two seconds
const history = new Map();  // key -> [{t, v}] of a counter

function remember(key, t, value) {
  const points = history.get(key) || [];
  points.push({ t, v: value });
  while (points.length > HISTORY_POINTS) points.shift();
  history.set(key, points);
  return points;
}

// Per-second rates between consecutive samples of a counter.
function rates(points) {
  const out = [];
  for (let i = 1; i < points.length; i++) {
    const seconds = (points[i].t - points[i - 1].t) / 1000;
    out.push(seconds > 0 ? Math.max(0, (points[i].v - points[i - 1].v) / seconds) : 0);
  }
  return out;
}

function sparkline(values) {
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 160 28");
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 160 / (values.length - 1) : 0;
  const line = document.createElementNS(svgNs, "polyline");
  line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(26 - (v / max) * 24).toFixed(1)}`).join(" "));
  svg.appendChild(line);
  const title = document.createElementNS(svgNs, "title");
  title.textContent = values.length ? `now ${values[values.length - 1].toFixed(1)}/s, peak ${max.toFixed(1)}/s` : "no data yet";
  svg.appendChild(title);
  const wrap = document.createElement("span");
  wrap.appendChild(svg);
  const now = document.createElement("span");
  now.textContent = values.length ? ` ${values[values.length - 1].toFixed(0)}/s` : "";
  wrap.appendChild(now);
  return wrap;
}

function cell(row, content, className) {
  const td = row.insertCell();
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  if (className) td.className = className;
  return td;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function age(seconds) {
  if (!seconds) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function render(data) {
  document.getElementById("version").textContent = `v${data.version}`;
  const topics = document.querySelector("#topics tbody");
  const groups = document.querySelector("#groups tbody");
  const dead = document.querySelector("#deadletters tbody");
  topics.replaceChildren(); groups.replaceChildren(); dead.replaceChildren();
  for (const topic of data.topics) {
    const row = topics.insertRow();
    row.dataset.topic = topic.name;
    cell(row, topic.name);
    if (!topic.open) {
      const idle = cell(row, "not opened since the start (opens on first use, or on Peek)");
      idle.colSpan = 4;
      if (topic.deadLetter) addDeadLetterRow(dead, topic, "?", "?");
      continue;
    }
    cell(row, topic.stored, "num");
    cell(row, topic.nextOffset, "num");
    cell(row, bytes(topic.diskBytes), "num");
    cell(row, sparkline(rates(remember(`p:${topic.name}`, data.unixMs, topic.nextOffset))));
    for (const group of topic.groups) {
      if (group.name.startsWith("__")) continue;  // the broker's own (redrive)
      const g = groups.insertRow();
      g.dataset.topic = topic.name;
      g.dataset.group = group.name;
      if (group.deadLettered > 0) g.className = "warn";
      cell(g, topic.name);
      cell(g, group.name);
      cell(g, group.backlog, "num backlog");
      cell(g, group.inFlight, "num");
      cell(g, group.delayed, "num");
      cell(g, group.consumers, "num");
      cell(g, age(group.oldestUnackedAgeSeconds), "num");
      cell(g, group.deadLettered, "num dead");
      cell(g, sparkline(rates(remember(`a:${topic.name}/${group.name}`, data.unixMs, group.acked))));
    }
    if (topic.deadLetter) {
      const redrive = topic.groups.find(g => g.name === "__redrive");
      addDeadLetterRow(dead, topic, topic.stored, redrive ? redrive.backlog : topic.nextOffset);
    }
  }
}

function addDeadLetterRow(table, topic, stored, waiting) {
  const d = table.insertRow();
  d.dataset.topic = topic.name;
  cell(d, topic.name);
  cell(d, stored, "num");
  cell(d, waiting, "num waiting");
  const actions = document.createElement("span");
  const peek = document.createElement("button");
  peek.textContent = "Peek";
  peek.className = "peek";
  peek.onclick = () => showPeek(topic.name);
  const send = document.createElement("button");
  send.textContent = "Redrive";
  send.className = "redrive";
  send.onclick = () => redriveAll(topic.name);
  actions.append(peek, " ", send);
  cell(d, actions);
}

async function showPeek(topic) {
  const answer = await fetch(`/api/topics/${encodeURIComponent(topic)}/messages?limit=50`);
  const data = await answer.json();
  document.getElementById("peek-title").textContent = `${topic}: first ${data.messages.length} stored`;
  const body = document.querySelector("#peek-messages tbody");
  body.replaceChildren();
  for (const message of data.messages) {
    const row = body.insertRow();
    cell(row, message.offset, "num");
    cell(row, new Date(message.publishUnixMs).toISOString());
    const list = document.createElement("dl");
    for (const [name, value] of Object.entries(message.headers)) {
      const dt = document.createElement("dt"); dt.textContent = name;
      const dd = document.createElement("dd"); dd.textContent = value;
      list.append(dt, dd);
    }
    cell(row, list, "headers");
    const pre = document.createElement("pre");
    pre.textContent = message.payloadPreview;
    cell(row, pre);
  }
  document.getElementById("peek").hidden = false;
}

async function redriveAll(topic) {
  const status = document.getElementById("status");
  const answer = await fetch(`/api/topics/${encodeURIComponent(topic)}/redrive`,
    { method: "POST", headers: { "X-Broker-Request": "web-view" } });
  const result = await answer.json();
  status.textContent = answer.ok ? `redrive of ${topic}: ${result.moved} moved, ${result.skipped} skipped` : `redrive failed: ${result.error}`;
  await poll();
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const answer = await fetch("/api/topics", { cache: "no-store" });
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    render(await answer.json());
    if (!status.textContent.startsWith("redrive")) status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("error");
  } catch (error) {
    status.textContent = `broker unreachable: ${error.message}`;
    status.classList.add("error");
  }
}

poll();
setInterval(poll, POLL_MS);
