// The chat page: log in and out, the logged-in users, one conversation per
// user. Every text from the network is escaped (escape.js) and set with
// textContent, never as HTML.

import { Connection, ClosedError, checkName, checkText } from "./protocol.js";
import { escapeText } from "./escape.js";

const $ = (id) => document.getElementById(id);

const state = {
  conn: null,
  me: null, // the logged-in name, or null
  conversations: new Map(), // name → { items: [{from, text, outcome}], unread }
  peer: null, // the open conversation's name
  retry: 0, // failed connection attempts since the connection ended
  downWhy: "could not connect", // why the last connection ended
  retryTimer: null,
};

function wsURL() {
  const u = new URL("ws", location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  u.search = "";
  u.hash = "";
  return u.href;
}

// Why a connection ended, in words, from its close code.
function closeWords(ev) {
  const words = {
    1000: "the connection was closed",
    1001: "the server is shutting down",
    1006: "the connection was lost",
    1008: "the server refused this client's requests",
    1009: "a message was too large",
    1011: "server error",
    1013: "the server is full; try again later",
    4000: "this page did not keep up with its messages",
    4001: "not logged in in time",
    4002: "a request was not completed in time",
  };
  if (words[ev.code]) return words[ev.code];
  return `closed with code ${ev.code}` + (ev.reason ? ` (${escapeText(ev.reason)})` : "");
}

function setStatus(text, down) {
  $("status").textContent = text;
  document.querySelector("header").classList.toggle("down", down);
  $("reconnect").hidden = !down;
}

function connect() {
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  if (state.conn && !state.conn.closed) return;
  setStatus("Connecting…", false);
  $("reconnect").hidden = true;
  const conn = new Connection(wsURL(), {
    onOpen: () => {
      conn.opened = true;
      state.retry = 0;
      setStatus("Connected. Not logged in.", false);
      refreshList();
    },
    onMessage: received,
    onClose: (ev) => disconnected(conn, ev),
  });
  state.conn = conn;
}

function disconnected(conn, ev) {
  if (state.conn !== conn) return;
  state.me = null;
  showAccount();
  if (conn.opened) {
    state.downWhy = closeWords(ev); // why it ended, kept while reconnecting fails
    state.retry = 0;
  } else {
    state.retry++;
  }
  const wait = Math.min(1000 * 2 ** state.retry, 5000);
  const tries = state.retry > 0 ? ` Could not connect again (${state.retry} ${state.retry === 1 ? "try" : "tries"}).` : "";
  setStatus(`Disconnected: ${state.downWhy}.${tries} Trying again in ${Math.round(wait / 1000)} s.`, true);
  state.retryTimer = setTimeout(connect, wait);
}

function showAccount() {
  $("login-form").hidden = state.me !== null;
  $("logged-in").hidden = state.me === null;
  $("me").textContent = state.me === null ? "" : escapeText(state.me);
}

// outcome reports the result of a request, or that it got none.
async function outcome(promise) {
  try {
    return await promise;
  } catch (e) {
    if (e instanceof ClosedError) return "Not connected";
    throw e;
  }
}

function report(id, word) {
  const el = $(id);
  el.textContent = word;
  el.classList.toggle("error", word !== "Success");
}

async function login(ev) {
  ev.preventDefault();
  const name = $("login-name").value;
  const bad = checkName(name);
  if (bad) {
    report("account-result", bad);
    return;
  }
  const word = await outcome(state.conn.login(name));
  report("account-result", word);
  if (word === "Success") {
    state.me = name;
    showAccount();
    setStatus(`Connected as ${escapeText(name)}.`, false);
    $("logout").focus();
    refreshList();
  }
}

async function logout() {
  const word = await outcome(state.conn.logout());
  report("account-result", word);
  if (word === "Success") {
    state.me = null;
    showAccount();
    setStatus("Connected. Not logged in.", false);
    $("login-name").focus();
    refreshList();
  }
}

async function refreshList() {
  let names;
  try {
    names = await state.conn.list();
  } catch (e) {
    if (e instanceof ClosedError) return report("list-result", "Not connected");
    throw e;
  }
  if (!Array.isArray(names)) {
    report("list-result", names); // Failure
    return;
  }
  $("list-result").textContent = names.length === 0 ? "Nobody is logged in." : "";
  $("list-result").classList.remove("error");
  const ul = $("users");
  ul.replaceChildren();
  for (const name of names) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = escapeText(name);
    b.addEventListener("click", () => openConversation(name));
    const li = document.createElement("li");
    li.append(b);
    ul.append(li);
  }
}

function conversation(name) {
  let c = state.conversations.get(name);
  if (!c) {
    c = { items: [], unread: 0 };
    state.conversations.set(name, c);
  }
  return c;
}

function openConversation(name) {
  state.peer = name;
  const c = conversation(name);
  c.unread = 0;
  $("conversation").hidden = false;
  $("peer").textContent = escapeText(name);
  renderConversations();
  renderMessages();
  $("text").focus();
}

function renderConversations() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const [name, c] of state.conversations) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = escapeText(name) + (c.unread ? ` (${c.unread} new)` : "");
    b.classList.toggle("unread", c.unread > 0);
    b.setAttribute("aria-current", name === state.peer ? "true" : "false");
    b.addEventListener("click", () => openConversation(name));
    const li = document.createElement("li");
    li.append(b);
    ul.append(li);
  }
}

function messageItem(m) {
  const li = document.createElement("li");
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = escapeText(m.from) + ": ";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = escapeText(m.text);
  li.append(from, text);
  if (m.outcome) {
    const o = document.createElement("span");
    o.className = "outcome" + (m.outcome === "Success" ? "" : " failure");
    o.textContent = m.outcome;
    li.append(o);
  }
  return li;
}

function renderMessages() {
  if (state.peer === null) return;
  const ol = $("messages");
  ol.replaceChildren(...conversation(state.peer).items.map(messageItem));
  ol.scrollTop = ol.scrollHeight;
}

function received({ from, text }) {
  const c = conversation(from);
  c.items.push({ from, text });
  if (from === state.peer) {
    renderMessages();
  } else {
    c.unread++;
  }
  renderConversations();
}

async function openByName(ev) {
  ev.preventDefault();
  const name = $("open-name").value;
  const bad = checkName(name);
  if (bad) {
    report("list-result", bad);
    return;
  }
  $("open-name").value = "";
  openConversation(name);
}

async function send(ev) {
  ev.preventDefault();
  const to = state.peer;
  const text = $("text").value;
  const bad = checkName(to) || checkText(text);
  if (bad) {
    report("send-result", bad);
    return;
  }
  const item = { from: state.me ?? "(not logged in)", text, outcome: "…" };
  conversation(to).items.push(item);
  $("text").value = "";
  renderMessages();
  const word = await outcome(state.conn.sendto(to, text));
  item.outcome = word;
  report("send-result", word);
  if (state.peer === to) renderMessages();
}

$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
$("refresh").addEventListener("click", refreshList);
$("open-form").addEventListener("submit", openByName);
$("send-form").addEventListener("submit", send);
$("text").addEventListener("keydown", (ev) => {
  // Enter sends; Shift+Enter starts a new line.
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("send-form").requestSubmit();
  }
});
$("reconnect").addEventListener("click", () => {
  state.retry = 0;
  connect();
});
showAccount();
connect();
