// Live leaderboard page: board/period from GET /v1/leaderboards, top N over SSE, player search.
// Plain JS, no dependencies (works offline). All text goes through textContent (player names are user data).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  boards: [],
  board: null,
  period: null,
  limit: 10,
  source: null,
  retry: null,
  ranks: new Map(), // player_id -> rank on the previous update, for the movement arrows
  player: null,
  playerTimer: null,
  endsAt: null, // ends_at of the shown period, for the countdown
};
setInterval(() => tickCountdown(), 1000);

function params() {
  return new URLSearchParams(location.search);
}

function saveUrl() {
  const q = new URLSearchParams();
  q.set("board", state.board);
  q.set("period", state.period);
  q.set("limit", String(state.limit));
  if (state.player) q.set("player", state.player);
  history.replaceState(null, "", "?" + q.toString());
}

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + (kind || "");
  document.body.classList.toggle("live", kind === "ok");
}

function rebuilding(on) {
  $("rebuilding").hidden = !on;
  if (on) setStatus("rebuilding", "warn");
}

function fmt(n) {
  return Number(n).toLocaleString("en-US");
}

function currentBoard() {
  return state.boards.find((b) => b.id === state.board);
}

// A board's value: an ascending board ranked by score is a time trial, its scores milliseconds (m:ss.mmm).
function fmtScore(n) {
  const board = currentBoard();
  if (!board || board.order !== "asc" || board.value !== "score") return fmt(n);
  const ms = Number(n);
  const h = Math.floor(ms / 3600000);
  const m = Math.floor((ms % 3600000) / 60000);
  const sec = ((ms % 60000) / 1000).toFixed(3).padStart(6, "0");
  return (h > 0 ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + sec;
}

// Time left until the shown period ends (ends_at of the last page), refreshed every second.
function countdownText(endsAt, now) {
  if (!endsAt) return "";
  const left = Math.floor((Date.parse(endsAt) - now) / 1000);
  if (left <= 0) return "ended";
  const d = Math.floor(left / 86400);
  const hms = [Math.floor((left % 86400) / 3600), Math.floor((left % 3600) / 60), left % 60]
    .map((x) => String(x).padStart(2, "0"))
    .join(":");
  return "ends in " + (d > 0 ? d + "d " : "") + hms;
}

function tickCountdown() {
  $("countdown").textContent = countdownText(state.endsAt, Date.now());
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

function whoCell(tr, entry) {
  const td = document.createElement("td");
  td.className = "who";
  const name = entry.display_name || entry.player_id;
  td.append(document.createTextNode(name));
  if (entry.display_name && entry.display_name !== entry.player_id) {
    const small = document.createElement("small");
    small.textContent = entry.player_id;
    td.appendChild(small);
  }
  td.title = entry.player_id;
  tr.appendChild(td);
}

// ------------------------------------------------------------------ boards and periods

function periodOptions(board) {
  const out = [];
  for (const kind of board.periods) {
    const key = board.current[kind];
    if (kind === "all_time") out.push(["all_time", "All time"]);
    else {
      const label = kind.charAt(0).toUpperCase() + kind.slice(1);
      out.push([kind + ":current", label + (key ? " (" + key.split(":").pop() + ")" : "")]);
      out.push([kind + ":previous", "Previous " + kind.replace(/ly$/, "").replace(/^dai$/, "day")]);
    }
  }
  if (board.current.season) out.push(["season:current", "Season (" + board.current.season.split(":").pop() + ")"]);
  for (const season of board.seasons || []) out.push([season.period, "Season " + season.period.split(":").pop()]);
  return out;
}

function fillPeriods(wanted) {
  const board = state.boards.find((b) => b.id === state.board);
  const sel = $("period");
  sel.replaceChildren();
  for (const [value, label] of periodOptions(board)) {
    const opt = document.createElement("option");
    opt.value = value;
    opt.textContent = label;
    sel.appendChild(opt);
  }
  const values = [...sel.options].map((o) => o.value);
  state.period = values.includes(wanted) ? wanted : values.includes(board.default_period) ? board.default_period : values[0];
  sel.value = state.period;
}

async function loadBoards() {
  const res = await fetch("/v1/leaderboards");
  if (!res.ok) throw new Error("GET /v1/leaderboards: " + res.status);
  state.boards = (await res.json()).boards;
  const q = params();
  const sel = $("board");
  sel.replaceChildren();
  for (const b of state.boards) {
    const opt = document.createElement("option");
    opt.value = b.id;
    opt.textContent = b.id;
    sel.appendChild(opt);
  }
  state.board = state.boards.some((b) => b.id === q.get("board")) ? q.get("board") : state.boards[0].id;
  sel.value = state.board;
  state.limit = q.get("limit") === "25" ? 25 : 10;
  $("limit").value = String(state.limit);
  fillPeriods(q.get("period"));
  return q.get("player");
}

// ------------------------------------------------------------------ live top N

function renderTop(page) {
  rebuilding(false);
  const tbody = $("rows");
  const previous = state.ranks;
  const first = previous.size === 0;
  const next = new Map();
  tbody.replaceChildren();
  for (const e of page.entries) {
    next.set(e.player_id, e.rank);
    const tr = document.createElement("tr");
    tr.dataset.player = e.player_id;
    tr.dataset.rank = String(e.rank);
    cell(tr, String(e.rank), "rank");
    whoCell(tr, e);
    cell(tr, fmtScore(e.score), "score");
    const move = cell(tr, "", "move");
    const before = previous.get(e.player_id);
    if (!first && before === undefined) {
      tr.classList.add("new", "flash");
      move.textContent = "new";
    } else if (before !== undefined && before > e.rank) {
      tr.classList.add("up", "flash");
      move.textContent = "▲" + (before - e.rank);
    } else if (before !== undefined && before < e.rank) {
      tr.classList.add("down");
      move.textContent = "▼" + (e.rank - before);
    }
    if (e.player_id === state.player) tr.classList.add("me");
    tbody.appendChild(tr);
  }
  if (!page.entries.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    cell(tr, "No scores yet for this period.").colSpan = 4;
    tbody.appendChild(tr);
  }
  state.ranks = next;
  $("top-n").textContent = String(state.limit);
  $("period-key").textContent = page.period + (page.source === "snapshot" ? " (final)" : "");
  state.endsAt = page.ends_at || null;
  tickCountdown();
  $("total").textContent = fmt(page.total);
  $("updated").textContent = new Date().toLocaleTimeString();
  // A moving board moves the searched player too: refresh their card, at most every 2 s.
  if (state.player && !state.playerTimer) {
    state.playerTimer = setTimeout(() => {
      state.playerTimer = null;
      showPlayer(state.player, true);
    }, 2000);
  }
}

function streamUrl() {
  const q = new URLSearchParams({ period: state.period, limit: String(state.limit) });
  return "/v1/leaderboards/" + encodeURIComponent(state.board) + "/entries/stream?" + q.toString();
}

function connect() {
  if (state.source) state.source.close();
  clearTimeout(state.retry);
  state.ranks = new Map();
  setStatus("connecting…");
  const es = new EventSource(streamUrl());
  state.source = es;
  es.addEventListener("open", () => setStatus("live", "ok"));
  es.addEventListener("top", (ev) => {
    setStatus("live", "ok");
    renderTop(JSON.parse(ev.data));
  });
  es.addEventListener("problem", (ev) => {
    const p = JSON.parse(ev.data);
    if (p.status === 503) rebuilding(true);
    else setStatus(p.detail || "unavailable", "warn");
  });
  es.addEventListener("error", () => {
    if (es.readyState !== EventSource.CLOSED) {
      setStatus("reconnecting…", "warn");
      return; // the browser retries by itself
    }
    // The stream was refused (e.g. 503 while rebuilding): find out why, then retry ourselves.
    probe().finally(() => {
      if (state.source === es) state.retry = setTimeout(connect, 3000);
    });
  });
}

async function probe() {
  try {
    const q = new URLSearchParams({ period: state.period, limit: "1" });
    const res = await fetch("/v1/leaderboards/" + encodeURIComponent(state.board) + "/entries?" + q);
    if (res.status === 503) rebuilding(true);
    else if (!res.ok) setStatus("error " + res.status, "warn");
    else setStatus("reconnecting…", "warn");
  } catch {
    setStatus("offline — retrying", "warn");
  }
}

// ------------------------------------------------------------------ player search

async function getJson(path) {
  const q = new URLSearchParams({ period: state.period });
  const res = await fetch(path + (path.includes("?") ? "&" : "?") + q.toString());
  const body = await res.json().catch(() => ({}));
  return { status: res.status, body };
}

async function showPlayer(id, quiet) {
  const base = "/v1/leaderboards/" + encodeURIComponent(state.board) + "/players/" + encodeURIComponent(id);
  const msg = $("search-msg");
  if (!quiet) msg.textContent = "Looking up " + id + "…";
  let me, around;
  try {
    [me, around] = await Promise.all([getJson(base), getJson(base + "/around?radius=3")]);
  } catch {
    msg.textContent = "Could not reach the API.";
    return;
  }
  if (id !== state.player) return; // a newer search won
  if (me.status === 503 || around.status === 503) {
    rebuilding(true);
    msg.textContent = "Rebuilding — data will be back shortly.";
    return;
  }
  if (me.status === 404) {
    $("player-card").hidden = true;
    msg.textContent = "“" + id + "” has no score on " + state.board + " for this period.";
    return;
  }
  if (me.status !== 200 || around.status !== 200) {
    msg.textContent = (me.body && me.body.detail) || "Lookup failed (" + me.status + ").";
    return;
  }
  const p = me.body;
  msg.textContent = "";
  $("player-card").hidden = false;
  $("player-name").textContent = p.display_name ? p.display_name + " (" + p.player_id + ")" : p.player_id;
  $("player-rank").textContent = "#" + fmt(p.rank) + " of " + fmt(p.total);
  $("player-score").textContent = fmtScore(p.score);
  $("player-pct").textContent = "top " + Math.max(0.01, 100 - p.percentile).toFixed(p.percentile > 99 ? 2 : 1) + "%";
  $("player-pct").title = p.percentile.toFixed(2) + "% of players have fewer points";
  const tbody = $("around");
  tbody.replaceChildren();
  for (const e of around.body.entries) {
    const tr = document.createElement("tr");
    tr.dataset.player = e.player_id;
    if (e.player_id === p.player_id) tr.classList.add("me");
    cell(tr, String(e.rank), "rank");
    whoCell(tr, e);
    cell(tr, fmtScore(e.score), "score");
    tbody.appendChild(tr);
  }
  for (const tr of $("rows").querySelectorAll("tr")) tr.classList.toggle("me", tr.dataset.player === p.player_id);
}

// ------------------------------------------------------------------ wiring

function restart() {
  saveUrl();
  connect();
  if (state.player) showPlayer(state.player);
}

async function main() {
  let player;
  try {
    player = await loadBoards();
  } catch (err) {
    setStatus("API unavailable — retrying", "warn");
    setTimeout(main, 3000);
    return;
  }
  $("board").addEventListener("change", (ev) => {
    state.board = ev.target.value;
    fillPeriods(state.period);
    restart();
  });
  $("period").addEventListener("change", (ev) => {
    state.period = ev.target.value;
    restart();
  });
  $("limit").addEventListener("change", (ev) => {
    state.limit = Number(ev.target.value);
    restart();
  });
  $("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("player-id").value.trim();
    if (!id) return;
    state.player = id;
    saveUrl();
    showPlayer(id);
  });
  if (player) {
    state.player = player;
    $("player-id").value = player;
    showPlayer(player);
  }
  saveUrl();
  connect();
}

main();
