// app.js: the chat page's wiring. It registers with chatd over the WebSocket (CAP LS
// 302, NICK, USER, CAP REQ, CAP END), joins #lobby and the rooms the user had open,
// turns each server line into a change of state (state.js) and of the DOM (view.js),
// and turns what the user types into lines (commands.js).
//
// History. On joining a room the page asks CHATHISTORY LATEST for its recent lines;
// "Load older" asks BEFORE the oldest msgid shown. After a reconnect it asks AFTER the
// newest msgid it had, page by page, so lines said while it was away show once: every
// line is put in order by (time, msgid) and a msgid already shown is skipped, whether
// it comes live, from history, or both. Each CHATHISTORY is sent with a label
// (labeled-response) so its batch is matched to the request that asked for it.

import * as irc from "/static/irc.js";
import { lineKey, mentions, Rooms, SCROLLBACK_MAX, store } from "/static/state.js";
import { View } from "/static/view.js";
import { Connection, socketUrl } from "/static/conn.js";
import { runInput } from "/static/commands.js";

const WANTED_CAPS = [
  "server-time",
  "message-tags",
  "echo-message",
  "batch",
  "labeled-response",
  "draft/chathistory",
  "multi-prefix",
  "userhost-in-names",
  "away-notify",
  "invite-notify",
  "setname",
  "cap-notify",
];
const DEFAULT_ROOM = "#lobby";
const HISTORY_ON_JOIN = 50;
const HISTORY_OLDER = 50;
const HISTORY_RESUME = 100;
// Bytes of text per PRIVMSG: 512 less CR LF, the command, the target and room for the
// "nick!user@host" source the server puts in front when it relays the line.
const TEXT_BYTES = 380;
const INPUT_HISTORY = 100;
const REGAIN_SECONDS = 10;
const REGAIN_TRIES = 6;

const view = new View();
const rooms = new Rooms();
const conn = new Connection(socketUrl(), {
  onOpen: startRegistration,
  onLine: handleLine,
  onClose: connectionLost,
  onStatus: (text) => view.setStatus(text),
});

const session = {
  nick: null, // the nick we ask for (the user's choice, or it with "_" added)
  chosen: null, // the nick the user picked
  me: null, // the nick the server knows us by
  registered: false,
  everRegistered: false, // since the page loaded (else: join #lobby and the remembered rooms)
  regaining: false, // a NICK to take back the user's nick is on its way
  auto: false, // this connection is a reconnect, not the user's Connect (a 433 adds "_")
  caps: new Set(),
  capLs: [],
  capEnded: false,
  ranks: "@+", // PREFIX symbols, highest first
  prefixOf: { o: "@", v: "+" }, // PREFIX mode letter -> symbol
  chanmodes: { A: "beI", B: "k", C: "l", D: "" }, // which modes take a parameter
  historyMax: 100,
};

let current = null; // the Room shown
let showOnJoin = null; // casefolded name of a room to show once joined
const resumeFrom = new Map(); // room key -> newest line before a reconnect
const batches = new Map(); // batch ref -> {type, params, lines, label}
const requests = new Map(); // label -> CHATHISTORY request
let unlabeled = []; // CHATHISTORY requests without a label, in the order sent
let labelSeq = 0;
const namesWanted = new Set(); // room keys whose NAMES reply is printed (/names)

// ---- sending ---------------------------------------------------------------------

function send(command, params = [], tags = null) {
  return conn.send(irc.formatLine(command, params, tags));
}

function now() {
  return new Date().toISOString();
}

// ---- rooms and lines ----------------------------------------------------------------

function unreadTotal() {
  return rooms.all().reduce((n, r) => n + r.unread, 0);
}

function renderRooms() {
  view.renderRooms(rooms.all(), current, (room) => selectRoom(room));
  view.setTitle(current, unreadTotal(), rooms.all().reduce((n, r) => n + r.mentions, 0));
}

function renderCurrent() {
  view.renderHeader(current);
  view.renderMembers(current, session.ranks);
}

function saveRooms() {
  store.set(
    "rooms",
    rooms.channels().filter((r) => r.wanted).map((r) => r.name),
  );
}

function selectRoom(room) {
  current = room;
  if (room) {
    room.unread = 0;
    room.mentions = 0;
    store.set("current", room.name);
  }
  view.showRoom(room);
  renderCurrent();
  renderRooms();
  view.togglePane("rooms", false);
}

function closeRoom(room) {
  rooms.close(room.name);
  view.removeRoom(room);
  saveRooms();
  if (current === room) selectRoom(rooms.all()[0] ?? null);
  else renderRooms();
}

// Put lines in a room, in order, skipping msgids it has; `count`: a line from someone
// else raises the unread (and mention) count unless the room is in front of the user.
// The scrollback is trimmed to its size, except while the user reads back in the shown
// room (then only to SCROLLBACK_MAX, so what they read does not vanish under them).
function addLines(room, lines, count) {
  if (!lines.length) return 0;
  const reading = room === current && !view.stuck;
  const limit = reading ? SCROLLBACK_MAX : room.scrollback;
  const newest = room.lines.length ? room.lines[room.lines.length - 1].key : "";
  const above = lines.some((l) => l.key < newest) || room.lines.length + lines.length > limit;
  let added = 0;
  let counted = false;
  view.update(room, above, () => {
    for (const line of lines) {
      const index = room.add(line);
      if (index < 0) continue;
      view.insertLine(room, index, line);
      added++;
      if (count && !line.self && line.kind !== "event" && (room !== current || document.hidden)) {
        room.unread++;
        if (line.mention || room.kind === "query") room.mentions++;
        counted = true;
      }
    }
    view.dropOldest(room, room.trim(limit));
  });
  if (counted) renderRooms();
  return added;
}

// A line the page says itself (help, errors, "disconnected"), after the newest line.
function localLine(room, kind, text, nick = null) {
  room = room ?? current;
  if (!room) {
    if (kind === "error") view.setNickError(text);
    return;
  }
  const time = now();
  addLines(room, [{ ...room.localPlace(time), id: null, time, kind, nick, text, self: false, mention: false }], false);
}

// A line the server reported (a join, a part, ...): placed by the server's time.
function eventLine(room, msg, nick, text) {
  const time = msg.tags.time || now();
  addLines(room, [{ key: lineKey(time, ""), id: null, time, kind: "event", nick, text, self: false, mention: false }], false);
}

// The room a PRIVMSG or NOTICE belongs to (opening a private one), or null.
function roomFor(msg) {
  let target = msg.params[0] ?? "";
  if (/^[@+]+#/.test(target)) target = target.replace(/^[@+]+/, ""); // STATUSMSG
  if (irc.isChannel(target)) return rooms.get(target);
  if (!msg.source || !msg.source.includes("!")) return null; // the server's
  const self = session.me && irc.casefold(msg.nick) === irc.casefold(session.me);
  const other = self ? target : msg.nick;
  if (!rooms.get(other)) {
    rooms.open(other, "query");
    renderRooms();
  }
  return rooms.get(other);
}

// A PRIVMSG or NOTICE as a line, or null (a CTCP other than ACTION).
function chatLine(msg) {
  let text = msg.params[1] ?? "";
  let kind = msg.command === "NOTICE" ? "notice" : "msg";
  const ctcp = irc.parseCtcp(text);
  if (ctcp) {
    if (ctcp.ctcp !== "ACTION" || kind === "notice") return null;
    kind = "action";
    text = ctcp.text;
  }
  const time = msg.tags.time || now();
  const id = msg.tags.msgid || null;
  const self = Boolean(session.me) && irc.casefold(msg.nick ?? "") === irc.casefold(session.me);
  return {
    key: lineKey(time, id),
    id,
    time,
    kind,
    nick: msg.nick ?? "",
    text,
    self,
    mention: !self && mentions(text, session.me),
  };
}

// ---- history -------------------------------------------------------------------------

function requestHistory(room, kind, ref, limit, fallbackTime = null) {
  const req = { room: room.key, kind, ref, limit, fallbackTime };
  const params = [kind, room.name, ref, String(Math.min(limit, session.historyMax))];
  if (kind === "BEFORE") room.loadingOlder = true;
  if (session.caps.has("labeled-response") && session.caps.has("batch")) {
    const label = `h${++labelSeq}`;
    requests.set(label, req);
    send("CHATHISTORY", params, { label });
  } else {
    unlabeled.push(req);
    send("CHATHISTORY", params);
  }
}

function takeRequest(label) {
  if (label && requests.has(label)) {
    const req = requests.get(label);
    requests.delete(label);
    return req;
  }
  return unlabeled.shift() ?? null;
}

function loadOlder() {
  const room = current;
  if (!room || room.kind !== "channel" || !room.joined || room.loadingOlder || room.noOlder) return;
  const oldest = room.oldestMessage();
  if (oldest) requestHistory(room, "BEFORE", `msgid=${oldest.id}`, HISTORY_OLDER, oldest.time);
  else requestHistory(room, "LATEST", "*", HISTORY_OLDER);
  view.renderLoadOlder(room);
}

function historyBatch(batch) {
  const req = takeRequest(batch.label);
  const room = rooms.get(batch.params[0] ?? "") ?? (req ? rooms.get(req.room) : null);
  if (!room) return;
  const messages = batch.lines.filter((m) => m.command === "PRIVMSG" || m.command === "NOTICE");
  const lines = messages.map(chatLine).filter(Boolean);
  const kind = req?.kind ?? "LATEST";
  if (kind === "BEFORE") room.growScrollback(lines.length);
  addLines(room, lines, kind === "AFTER");
  const limit = req?.limit ?? HISTORY_ON_JOIN;
  if (kind === "BEFORE" || kind === "LATEST") {
    room.loadingOlder = false;
    if (messages.length < Math.min(limit, session.historyMax)) room.noOlder = true;
  }
  if (kind === "AFTER" && messages.length >= Math.min(limit, session.historyMax)) {
    // More was said while we were away than one page holds: ask for the next one.
    const last = [...messages].reverse().find((m) => m.tags.msgid);
    if (last) requestHistory(room, "AFTER", `msgid=${last.tags.msgid}`, HISTORY_RESUME, last.tags.time);
  }
  if (room === current) view.renderLoadOlder(room);
}

function historyFailed(msg) {
  const req = takeRequest(msg.tags.label);
  const room = req ? rooms.get(req.room) : null;
  if (!room) return;
  room.loadingOlder = false;
  const code = msg.params[1];
  if (code === "MESSAGE_ERROR" && req.ref.startsWith("msgid=") && req.fallbackTime) {
    // The msgid is not in the history (a server that keeps none across restarts, or
    // it aged out): ask by time instead.
    requestHistory(room, req.kind, `timestamp=${req.fallbackTime}`, req.limit);
  } else if (code !== "INVALID_TARGET") {
    localLine(room, "error", `history: ${msg.params[msg.params.length - 1]}`);
  }
  if (room === current) view.renderLoadOlder(room);
}

// ---- connection and registration ---------------------------------------------------

function startRegistration() {
  session.caps = new Set();
  session.capLs = [];
  session.capEnded = false;
  session.registered = false;
  session.nick = session.chosen ?? session.nick;
  send("CAP", ["LS", "302"]);
  send("NICK", [session.nick]);
  send("USER", [session.nick, "0", "*", session.nick]);
}

function endCap() {
  if (!session.capEnded) {
    session.capEnded = true;
    send("CAP", ["END"]);
  }
}

// Connect as `nick`; `auto`: the page does it by itself (a reload with a remembered
// nick), so a nick still held by the page's previous connection gets a "_" added for
// now instead of stopping at an error.
function connect(nick, auto = false) {
  session.chosen = session.nick = nick;
  session.auto = auto;
  store.set("nick", nick);
  view.setNickError(null);
  conn.connect();
}

// `restart`: the server said it stops or restarts (WebSocket close 1012 or 1001).
function connectionLost(willRetry, restart = false) {
  const wasRegistered = session.registered;
  session.registered = false;
  session.me = null;
  batches.clear();
  requests.clear();
  unlabeled = [];
  for (const room of rooms.channels()) {
    room.joined = false;
    room.loadingOlder = false;
    room.members.clear();
    room.pendingNames = null;
  }
  if (wasRegistered) {
    const why = restart ? "server restarting" : "disconnected";
    for (const room of rooms.all()) localLine(room, "event", willRetry ? `${why}; reconnecting` : why);
  }
  view.setConnected(false, session.chosen);
  renderCurrent();
  renderRooms();
}

// The server took our nick: the rooms to be in now.
function welcome(msg) {
  session.me = msg.params[0];
  session.registered = true;
  conn.registered();
  view.setStatus("open");
  view.setNickError(null);
  view.setConnected(true, session.me);
  const names = new Map();
  const add = (name) => names.has(irc.casefold(name)) || names.set(irc.casefold(name), name);
  if (!session.everRegistered) {
    add(DEFAULT_ROOM);
    for (const name of store.get("rooms", [])) if (irc.isChannel(name)) add(name);
    const last = store.get("current", null);
    showOnJoin = last && names.has(irc.casefold(last)) ? irc.casefold(last) : null;
  } else {
    for (const room of rooms.channels()) if (room.wanted) add(room.name);
  }
  session.everRegistered = true;
  session.auto = true;
  if (!isMe(session.chosen)) regainNick();
  for (const [key, name] of names) {
    const room = rooms.get(name);
    const newest = room ? room.newestMessage() : null;
    if (newest) resumeFrom.set(key, newest);
    send("JOIN", [name]);
  }
}

function isupport(msg) {
  for (const token of msg.params.slice(1, -1)) {
    const [key, value = ""] = token.split("=", 2);
    if (key === "PREFIX") {
      const m = /^\(([^)]*)\)(.*)$/.exec(value);
      if (m && m[1].length === m[2].length) {
        session.ranks = m[2];
        session.prefixOf = {};
        [...m[1]].forEach((mode, i) => (session.prefixOf[mode] = m[2][i]));
      }
    } else if (key === "CHANMODES") {
      const [A = "", B = "", C = "", D = ""] = value.split(",");
      session.chanmodes = { A, B, C, D };
    } else if (key === "CHATHISTORY") {
      const n = parseInt(value, 10);
      if (n > 0) session.historyMax = n;
    }
  }
}

// Registered under another nick than the user's choice (it was held by our own previous
// connection, not yet gone): ask for it again a few times.
let regainTimer = null;
function regainNick(attempt = 0) {
  clearTimeout(regainTimer);
  if (attempt >= REGAIN_TRIES) return;
  regainTimer = setTimeout(() => {
    if (!session.registered || !session.chosen || isMe(session.chosen)) return;
    session.regaining = true;
    send("NICK", [session.chosen]);
    regainNick(attempt + 1);
  }, REGAIN_SECONDS * 1000);
}

function nickRefused(msg) {
  const nick = msg.params[1] ?? "";
  if (session.registered && session.regaining) {
    session.regaining = false;
    return;
  }
  const why = msg.command === "433" ? `${nick} is taken; pick another` : `${nick}: ${msg.params[msg.params.length - 1]}`;
  if (session.registered) {
    session.chosen = session.me; // the user's new choice was refused: keep what we have
    view.setNickError(why);
    localLine(null, "error", why);
  } else if (!session.auto) {
    view.setNickError(why);
    conn.close();
    view.el.nick.focus();
    view.el.nick.select();
  } else {
    // Reconnecting, and the old connection may still hold the nick: take another.
    session.nick = (session.nick + "_").slice(0, 30);
    send("NICK", [session.nick]);
  }
}

// ---- what the server says ----------------------------------------------------------

function isMe(nick) {
  return Boolean(session.me) && irc.casefold(nick ?? "") === irc.casefold(session.me);
}

function memberListChanged(room) {
  if (room === current) view.renderMembers(current, session.ranks);
}

function setPrefix(room, nick, symbol, on) {
  const m = room.member(nick);
  if (!m) return;
  const have = new Set(m.prefixes);
  if (on) have.add(symbol);
  else have.delete(symbol);
  room.setMember(m.nick, [...session.ranks].filter((r) => have.has(r)).join(""));
}

const HANDLERS = {
  PING(msg) {
    send("PONG", msg.params);
  },

  CAP(msg) {
    const sub = (msg.params[1] ?? "").toUpperCase();
    const more = msg.params[2] === "*";
    const list = (more ? msg.params[3] : msg.params[2]) ?? "";
    const caps = list.split(" ").filter(Boolean);
    if (sub === "LS") {
      session.capLs.push(...caps.map((c) => c.split("=")[0]));
      if (more) return;
      const want = WANTED_CAPS.filter((c) => session.capLs.includes(c));
      if (want.length) send("CAP", ["REQ", want.join(" ")]);
      else endCap();
    } else if (sub === "ACK") {
      for (const c of caps) {
        if (c.startsWith("-")) session.caps.delete(c.slice(1));
        else session.caps.add(c);
      }
      endCap();
    } else if (sub === "NAK") {
      endCap();
    } else if (sub === "NEW") {
      const want = WANTED_CAPS.filter((c) => caps.some((x) => x.split("=")[0] === c) && !session.caps.has(c));
      if (want.length) send("CAP", ["REQ", want.join(" ")]);
    } else if (sub === "DEL") {
      for (const c of caps) session.caps.delete(c);
    }
  },

  "001": welcome,
  "005": isupport,
  432: nickRefused,
  433: nickRefused,
  436: nickRefused,

  JOIN(msg) {
    const name = msg.params[0];
    if (!name) return;
    if (isMe(msg.nick)) {
      const room = rooms.open(name, "channel");
      room.joined = true;
      room.wanted = true;
      room.members.clear();
      saveRooms();
      const newest = resumeFrom.get(room.key) ?? room.newestMessage();
      resumeFrom.delete(room.key);
      if (newest) requestHistory(room, "AFTER", `msgid=${newest.id}`, HISTORY_RESUME, newest.time);
      else requestHistory(room, "LATEST", "*", HISTORY_ON_JOIN);
      eventLine(room, msg, msg.nick, "joined");
      // Show the room the user asked for (or had open before a reload), or the first
      // one; a rejoin after a reconnect leaves the view alone.
      if (showOnJoin === room.key || !current) {
        if (showOnJoin === room.key) showOnJoin = null;
        selectRoom(room);
      } else {
        if (room === current) renderCurrent();
        renderRooms();
      }
      return;
    }
    const room = rooms.get(name);
    if (!room) return;
    room.setMember(msg.nick);
    eventLine(room, msg, msg.nick, "joined");
    memberListChanged(room);
  },

  PART(msg) {
    const room = rooms.get(msg.params[0] ?? "");
    if (!room) return;
    if (isMe(msg.nick)) return closeRoom(room);
    room.removeMember(msg.nick);
    eventLine(room, msg, msg.nick, msg.params[1] ? `left (${msg.params[1]})` : "left");
    memberListChanged(room);
  },

  KICK(msg) {
    const [name, victim, reason] = msg.params;
    const room = rooms.get(name ?? "");
    if (!room) return;
    const why = reason && reason !== msg.nick ? ` (${reason})` : "";
    if (isMe(victim)) {
      room.joined = false;
      room.wanted = false;
      room.members.clear();
      saveRooms();
      localLine(room, "error", `you were kicked from ${room.name} by ${msg.nick}${why}`);
      if (room === current) renderCurrent();
      renderRooms();
      return;
    }
    room.removeMember(victim);
    eventLine(room, msg, victim, `was kicked by ${msg.nick}${why}`);
    memberListChanged(room);
  },

  QUIT(msg) {
    const why = msg.params[0] ? `quit (${msg.params[0]})` : "quit";
    for (const room of rooms.all()) {
      if (room.kind === "channel" ? room.removeMember(msg.nick) : irc.casefold(room.name) === irc.casefold(msg.nick)) {
        eventLine(room, msg, msg.nick, why);
        memberListChanged(room);
      }
    }
    // The connection that held our nick before a reconnect is gone: take it back.
    if (session.registered && session.chosen && irc.casefold(msg.nick) === irc.casefold(session.chosen) && !isMe(session.chosen))
      send("NICK", [session.chosen]);
  },

  NICK(msg) {
    const newNick = msg.params[0];
    if (!newNick) return;
    const oldNick = msg.nick;
    if (isMe(oldNick)) {
      session.me = session.nick = newNick;
      session.regaining = false;
      if (irc.casefold(newNick) === irc.casefold(session.chosen ?? "")) store.set("nick", newNick);
      view.setNickError(null);
      view.setConnected(true, newNick);
    }
    for (const room of rooms.all()) {
      if (room.kind === "channel") {
        if (room.renameMember(oldNick, newNick)) {
          eventLine(room, msg, oldNick, `is now known as ${newNick}`);
          memberListChanged(room);
        }
      } else if (irc.casefold(room.name) === irc.casefold(oldNick)) {
        rooms.rename(oldNick, newNick);
        eventLine(room, msg, oldNick, `is now known as ${newNick}`);
        if (room === current) renderCurrent();
      }
    }
    renderRooms();
  },

  MODE(msg) {
    const [target, modes = "", ...args] = msg.params;
    const room = rooms.get(target ?? "");
    if (!room || room.kind !== "channel") return;
    let on = true;
    let i = 0;
    const { A, B, C } = session.chanmodes;
    for (const ch of modes) {
      if (ch === "+" || ch === "-") on = ch === "+";
      else if (session.prefixOf[ch]) setPrefix(room, args[i++] ?? "", session.prefixOf[ch], on);
      else if (A.includes(ch) || B.includes(ch) || (on && C.includes(ch))) i++;
    }
    eventLine(room, msg, msg.nick, `sets mode ${[modes, ...args].join(" ")}`);
    memberListChanged(room);
  },

  TOPIC(msg) {
    const room = rooms.get(msg.params[0] ?? "");
    if (!room) return;
    room.topic = msg.params[1] ?? "";
    room.topicBy = msg.nick;
    eventLine(room, msg, msg.nick, room.topic ? `set the topic: ${room.topic}` : "cleared the topic");
    if (room === current) renderCurrent();
  },

  331(msg) {
    const room = rooms.get(msg.params[1] ?? "");
    if (room) room.topic = "";
    if (room === current) renderCurrent();
  },

  332(msg) {
    const room = rooms.get(msg.params[1] ?? "");
    if (!room) return;
    room.topic = msg.params[2] ?? "";
    if (room === current) renderCurrent();
  },

  333(msg) {
    const room = rooms.get(msg.params[1] ?? "");
    if (!room) return;
    room.topicBy = irc.nickOf(msg.params[2] ?? "");
    if (room === current) renderCurrent();
  },

  353(msg) {
    const room = rooms.get(msg.params[2] ?? "");
    if (!room) return;
    room.pendingNames ??= new Map();
    for (const entry of (msg.params[3] ?? "").split(" ").filter(Boolean)) {
      let n = 0;
      while (n < entry.length && session.ranks.includes(entry[n])) n++;
      const nick = irc.nickOf(entry.slice(n));
      if (nick) room.pendingNames.set(irc.casefold(nick), { nick, prefixes: entry.slice(0, n) });
    }
  },

  366(msg) {
    const room = rooms.get(msg.params[1] ?? "");
    if (!room) return;
    room.members = room.pendingNames ?? new Map();
    room.pendingNames = null;
    memberListChanged(room);
    if (namesWanted.delete(room.key)) {
      const list = room.sortedMembers(session.ranks).map((m) => (m.prefixes[0] ?? "") + m.nick);
      localLine(room, "info", `members of ${room.name} (${list.length}): ${list.join(" ")}`);
    }
  },

  PRIVMSG: chatMessage,
  NOTICE: chatMessage,

  BATCH(msg) {
    const ref = msg.params[0] ?? "";
    if (ref.startsWith("+")) {
      // A batch inside a labeled-response batch answers that batch's label.
      const parent = batches.get(msg.tags.batch ?? "");
      batches.set(ref.slice(1), {
        type: msg.params[1] ?? "",
        params: msg.params.slice(2),
        lines: [],
        label: msg.tags.label ?? parent?.label ?? null,
      });
    } else if (ref.startsWith("-")) {
      const batch = batches.get(ref.slice(1));
      batches.delete(ref.slice(1));
      if (batch && batch.type === "chathistory") historyBatch(batch);
    }
  },

  FAIL(msg) {
    if (msg.params[0] === "CHATHISTORY") return historyFailed(msg);
    localLine(null, "error", msg.params[msg.params.length - 1] ?? "failed");
  },

  WARN(msg) {
    localLine(null, "info", msg.params[msg.params.length - 1] ?? "");
  },

  INVITE(msg) {
    const [who, name] = msg.params;
    if (isMe(who)) localLine(null, "info", `${msg.nick} invites you to ${name} (/join ${name})`);
    else {
      const room = rooms.get(name ?? "");
      if (room) eventLine(room, msg, msg.nick, `invited ${who}`);
    }
  },

  ERROR(msg) {
    localLine(null, "error", `server: ${msg.params[0] ?? "closing"}`);
  },

  // No MOTD is no error.
  422() {},

  301(msg) {
    const room = rooms.get(msg.params[1] ?? "");
    if (room) localLine(room, "info", `${msg.params[1]} is away: ${msg.params[2] ?? ""}`);
  },
};

function chatMessage(msg) {
  const room = roomFor(msg);
  if (!room) {
    // The server's own notices: shown where the user is looking.
    if (msg.command === "NOTICE" && current && session.registered) localLine(current, "info", msg.params[1] ?? "");
    return;
  }
  const line = chatLine(msg);
  if (line) addLines(room, [line], true);
}

// An error numeric: said in the room it is about, else in the current one.
function numericError(msg) {
  const about = msg.params[1] ?? "";
  const room = rooms.get(about) ?? current;
  const text = msg.params.length > 2 ? `${about}: ${msg.params[msg.params.length - 1]}` : msg.params[msg.params.length - 1];
  if (!session.registered) return view.setNickError(text);
  localLine(room, "error", text ?? msg.command);
}

function handleLine(text) {
  const msg = irc.parseLine(text);
  if (!msg) return;
  const batch = msg.tags.batch ? batches.get(msg.tags.batch) : null;
  if (batch && batch.type === "chathistory") {
    batch.lines.push(msg);
    return;
  }
  const handler = HANDLERS[msg.command];
  try {
    if (handler) handler(msg);
    else if (/^[45]\d\d$/.test(msg.command)) numericError(msg);
  } catch (err) {
    console.error("chatd: could not handle", text, err);
  }
}

// ---- what the user does ------------------------------------------------------------

const commandContext = {
  current: () => current,
  room: (name) => rooms.get(name),
  send,
  info: (text) => localLine(null, "info", text),
  error: (text) => localLine(null, "error", text),
  say(room, text, isAction) {
    const max = TEXT_BYTES - irc.utf8Length(room.name) - (isAction ? 9 : 0);
    for (const piece of irc.splitText(text, max)) {
      if (!send("PRIVMSG", [room.name, isAction ? irc.action(piece) : piece])) {
        localLine(room, "error", "not connected");
        return;
      }
      if (!session.caps.has("echo-message")) {
        const time = now();
        const line = { ...room.localPlace(time), id: null, time, kind: isAction ? "action" : "msg", nick: session.me, text: piece, self: true, mention: false };
        addLines(room, [line], false);
      }
    }
  },
  join(name) {
    const room = rooms.get(name);
    if (room && room.joined) return selectRoom(room);
    showOnJoin = irc.casefold(name);
    send("JOIN", [name]);
  },
  openQuery(nick) {
    const room = rooms.open(nick, "query");
    selectRoom(room);
    return room;
  },
  closeRoom,
  nick(nick) {
    session.chosen = nick;
    send("NICK", [nick]);
  },
  requestNames(room) {
    namesWanted.add(room.key);
    send("NAMES", [room.name]);
  },
  quit(reason) {
    if (conn.isOpen) send("QUIT", [reason]);
    conn.close();
  },
};

const inputHistory = [];
let historyIndex = 0;

function submitMessage(event) {
  event.preventDefault();
  const field = view.el.message;
  const text = field.value;
  if (!text.trim()) return;
  const local = /^\/(help|quit)\b/i.test(text);
  if (!session.registered && !local) {
    localLine(null, "error", "not connected; your text stays in the field");
    return;
  }
  runInput(commandContext, text);
  inputHistory.push(text);
  if (inputHistory.length > INPUT_HISTORY) inputHistory.shift();
  historyIndex = inputHistory.length;
  field.value = "";
}

// Up and Down recall what was sent; Tab completes a member's nick.
function messageKey(event) {
  const field = view.el.message;
  if (event.key === "ArrowUp" && historyIndex > 0 && !event.shiftKey) {
    historyIndex--;
    field.value = inputHistory[historyIndex];
    event.preventDefault();
  } else if (event.key === "ArrowDown" && historyIndex < inputHistory.length) {
    historyIndex++;
    field.value = inputHistory[historyIndex] ?? "";
    event.preventDefault();
  } else if (event.key === "Tab" && !event.shiftKey && current) {
    const pos = field.selectionStart ?? field.value.length;
    const before = field.value.slice(0, pos);
    const word = /[^\s]*$/.exec(before)[0];
    if (!word) return;
    const nicks = current.kind === "channel" ? current.sortedMembers(session.ranks).map((m) => m.nick) : [current.name];
    const match = nicks.find((n) => irc.casefold(n).startsWith(irc.casefold(word)) && !isMe(n));
    if (!match) return;
    const suffix = before.length === word.length ? ": " : " ";
    field.value = before.slice(0, pos - word.length) + match + suffix + field.value.slice(pos);
    const caret = pos - word.length + match.length + suffix.length;
    field.setSelectionRange(caret, caret);
    event.preventDefault();
  }
}

function submitNick(event) {
  event.preventDefault();
  const nick = view.el.nick.value.trim();
  if (!irc.validNick(nick)) {
    view.setNickError("a nickname is 1 to 30 letters, digits or []\\`_^{|}- and starts with a letter");
    return;
  }
  view.setNickError(null);
  if (session.registered) {
    if (nick !== session.me) commandContext.nick(nick);
    return;
  }
  connect(nick);
}

function submitJoin(event) {
  event.preventDefault();
  const name = view.el.joinRoom.value.trim();
  if (!name) return;
  if (!session.registered) return view.setNickError("connect first");
  commandContext.join(irc.isChannel(name) ? name : `#${name}`);
  view.el.joinRoom.value = "";
}

// ---- theme ---------------------------------------------------------------------------

// "auto" follows prefers-color-scheme; the button goes auto -> the other scheme ->
// this scheme -> auto, so its first press always changes what is shown.
function systemTheme() {
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  view.setTheme(theme === "light" || theme === "dark" ? theme : `auto (${systemTheme()})`);
}

function cycleTheme() {
  const theme = store.get("theme", "auto");
  const system = systemTheme();
  const other = system === "dark" ? "light" : "dark";
  const next = theme === "auto" ? other : theme === other ? system : "auto";
  store.set("theme", next === "auto" ? null : next);
  applyTheme(next);
}

// ---- start -------------------------------------------------------------------------

function start() {
  view.setStatus("closed");
  applyTheme(store.get("theme", "auto"));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(store.get("theme", "auto")));
  view.el.nickForm.addEventListener("submit", submitNick);
  view.el.sendForm.addEventListener("submit", submitMessage);
  view.el.message.addEventListener("keydown", messageKey);
  view.el.joinForm.addEventListener("submit", submitJoin);
  view.el.loadOlder.addEventListener("click", loadOlder);
  view.el.theme.addEventListener("click", cycleTheme);
  view.el.toggleRooms.addEventListener("click", () => view.togglePane("rooms"));
  view.el.toggleMembers.addEventListener("click", () => view.togglePane("members"));
  // On a phone the lists are drawers over the log: a tap on the log or Escape closes them.
  const closePanes = () => {
    view.togglePane("rooms", false);
    view.togglePane("members", false);
  };
  document.getElementById("chat").addEventListener("click", closePanes);
  addEventListener("keydown", (event) => {
    if (event.key === "Escape") closePanes();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    if (view.stuck) view.scrollToBottom();
    if (current && (current.unread || current.mentions)) {
      current.unread = current.mentions = 0;
      renderRooms();
    }
  });
  addEventListener("online", () => conn.retryNow());
  // Leaving (or reloading) the page: say so, so the server frees the nick at once.
  addEventListener("pagehide", () => {
    if (conn.isOpen) send("QUIT", ["page closed"]);
  });
  renderCurrent();
  renderRooms();
  const nick = store.get("nick", null);
  if (typeof nick === "string" && irc.validNick(nick)) {
    view.el.nick.value = nick;
    connect(nick, true);
  } else {
    view.el.nick.focus();
  }
}

start();
