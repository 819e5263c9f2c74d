// view.js: the DOM. Everything the page shows is built here with createElement and
// textContent: no innerHTML anywhere, so a message can never become markup. Links are
// made only from http(s) URLs, with the href set through the DOM.
//
// Each room has its own <ol> of lines inside the role="log" region; only the current
// one is shown, and its children always mirror Room.lines one to one (view.insertLine
// puts a line at the index Room.add returned, view.dropOldest removes what Room.trim
// dropped). The room list, the member list and the header are rebuilt from state when
// they change: they are small.

import { nickColour } from "/static/state.js";
import { stripFormatting } from "/static/irc.js";

const $ = (id) => document.getElementById(id);

// createElement with a class and children (strings become text nodes).
export function h(tag, className, ...children) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

// A span that only screen readers read.
function sr(text) {
  return h("span", "visually-hidden", text);
}

// http:// or https:// up to a space or a character that cannot be in a URL unescaped.
const URL_RX = /\bhttps?:\/\/[^\s<>"'`\u0000-\u001f\u007f]+/gi;
const TRAILING = /[.,;:!?*]$/;

function trimUrl(url) {
  for (;;) {
    if (TRAILING.test(url)) url = url.slice(0, -1);
    else if (url.endsWith(")") && (url.match(/\(/g) || []).length < (url.match(/\)/g) || []).length)
      url = url.slice(0, -1);
    else return url;
  }
}

// The text as text nodes, with http(s) URLs as links. Anything else (javascript:,
// data:, ...) stays text, and a URL the URL parser rejects stays text too.
export function linkify(text) {
  const frag = document.createDocumentFragment();
  let pos = 0;
  for (const match of text.matchAll(URL_RX)) {
    const raw = trimUrl(match[0]);
    let url;
    try {
      url = new URL(raw);
    } catch {
      continue;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    if (match.index > pos) frag.append(document.createTextNode(text.slice(pos, match.index)));
    const a = h("a", null, raw);
    a.href = url.href;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    frag.append(a);
    pos = match.index + raw.length;
  }
  if (pos < text.length) frag.append(document.createTextNode(text.slice(pos)));
  return frag;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// <time datetime="2026-01-02T03:04:05.678Z" title="...">04:04</time> (local HH:MM).
export function timeElement(iso) {
  const date = new Date(iso);
  const el = h("time", "ts", Number.isNaN(date.getTime()) ? "--:--" : `${pad(date.getHours())}:${pad(date.getMinutes())}`);
  el.dateTime = iso;
  el.title = iso;
  return el;
}

export function nickElement(nick) {
  return h("span", `nick ${nickColour(nick)}`, nick);
}

// One line of the log. line: {kind, time, nick, text, self, mention, id}
//   msg     12:01 alice: hello
//   action  12:01 * alice waves
//   notice  12:01 -alice- text
//   event   12:01 alice joined          (joins, parts, quits, nicks, modes: dimmer)
//   info    12:01 text from the page    (help, /names)
//   error   12:01 text from the page or the server's refusal
export function lineElement(line) {
  const li = h("li", `line kind-${line.kind}`);
  if (line.self) li.classList.add("self");
  if (line.mention) li.classList.add("mention");
  if (line.id) li.dataset.msgid = line.id;
  li.append(timeElement(line.time), " ");
  const text = linkify(stripFormatting(line.text ?? ""));
  switch (line.kind) {
    case "msg":
      li.append(nickElement(line.nick), h("span", "sep", ": "), h("span", "text", text));
      break;
    case "action":
      li.append(h("span", "star", "* "), nickElement(line.nick), " ", h("span", "text", text));
      break;
    case "notice":
      li.append(h("span", "sep", "-"), nickElement(line.nick), h("span", "sep", "- "), h("span", "text", text));
      break;
    case "event":
      li.append(h("span", "star", "\u2192 "));
      if (line.nick) li.append(nickElement(line.nick), " ");
      li.append(h("span", "text", text));
      break;
    default:
      li.append(h("span", "star", line.kind === "error" ? "! " : "* "), h("span", "text", text));
  }
  return li;
}

export class View {
  constructor() {
    this.el = {
      status: $("status"),
      nickForm: $("nick-form"),
      nick: $("nick"),
      connect: $("connect"),
      nickError: $("nick-error"),
      theme: $("theme"),
      themeLabel: $("theme-label"),
      roomsUnread: $("rooms-unread"),
      rooms: $("rooms"),
      joinForm: $("join-form"),
      joinRoom: $("join-room"),
      roomName: $("room-name"),
      topic: $("topic"),
      scroller: $("scroller"),
      loadOlder: $("load-older"),
      historyStart: $("history-start"),
      log: $("log"),
      hint: $("hint"),
      sendForm: $("send-form"),
      message: $("message"),
      members: $("members"),
      membersTitle: $("members-title"),
      toggleRooms: $("toggle-rooms"),
      toggleMembers: $("toggle-members"),
    };
    this.lists = new WeakMap(); // Room -> its <ol>
    this.scroll = new WeakMap(); // Room -> {atBottom, top}
    this.shown = null;
    this.watchScroll();
  }

  setStatus(text) {
    this.el.status.textContent = text;
    this.el.status.dataset.state = text.split(" ")[0];
  }

  setNickError(text) {
    this.el.nickError.textContent = text ?? "";
    this.el.nickError.hidden = !text;
    if (text) this.el.nick.setAttribute("aria-invalid", "true");
    else this.el.nick.removeAttribute("aria-invalid");
  }

  setConnected(registered, nick) {
    this.el.connect.textContent = registered ? "Change nick" : "Connect";
    if (nick && document.activeElement !== this.el.nick) this.el.nick.value = nick;
    document.body.classList.toggle("registered", registered);
  }

  setTheme(label) {
    this.el.themeLabel.textContent = `Theme: ${label}`;
  }

  listFor(room) {
    let ol = this.lists.get(room);
    if (!ol) {
      ol = h("ol", "lines");
      ol.hidden = true;
      ol.dataset.room = room.name;
      this.lists.set(room, ol);
      this.el.log.append(ol);
    }
    return ol;
  }

  removeRoom(room) {
    this.lists.get(room)?.remove();
    this.lists.delete(room);
    if (this.shown === room) this.shown = null;
  }

  // Scrolling. `stuck` says whether the reader is at the bottom of the log: kept up to
  // date from scroll events, so adding a line never has to measure the page (a layout
  // per line would make a busy room crawl). While stuck, new lines scroll into view,
  // once per frame whatever their number.
  atBottom() {
    const s = this.el.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 40;
  }

  watchScroll() {
    this.stuck = true;
    this.bottomPending = false;
    this.el.scroller.addEventListener("scroll", () => {
      if (!this.bottomPending) this.stuck = this.atBottom();
    }, { passive: true });
    // The phone's keyboard, a rotation, a resized window: stay at the bottom.
    new ResizeObserver(() => {
      if (this.stuck) this.scrollToBottom();
    }).observe(this.el.scroller);
  }

  scrollToBottom() {
    this.bottomPending = false;
    this.el.scroller.scrollTop = this.el.scroller.scrollHeight;
  }

  scrollToBottomSoon() {
    if (this.bottomPending) return;
    this.bottomPending = true;
    // A hidden tab gets no animation frames; it scrolls when shown (visibilitychange).
    requestAnimationFrame(() => {
      if (this.bottomPending) this.scrollToBottom();
    });
  }

  // Change a room's lines in fn() (insertLine, dropOldest) and keep the reader's place:
  // at the bottom if they were there; else, when fn() adds or removes lines above
  // what they are reading (`above`: "Load older", the scrollback trimmed), on the line
  // they were looking at. Lines added below them need nothing.
  update(room, above, fn) {
    if (room !== this.shown) return fn();
    if (this.stuck) {
      const result = fn();
      this.scrollToBottomSoon();
      return result;
    }
    if (!above) return fn();
    const scroller = this.el.scroller;
    let anchor = null;
    let offset = 0;
    for (const li of this.listFor(room).children) {
      if (li.offsetTop + li.offsetHeight > scroller.scrollTop) {
        anchor = li;
        offset = li.offsetTop - scroller.scrollTop;
        break;
      }
    }
    const result = fn();
    if (anchor && anchor.isConnected) scroller.scrollTop = anchor.offsetTop - offset;
    return result;
  }

  // Put a line's element at `index` of its room's list (the index Room.add gave).
  insertLine(room, index, line) {
    const ol = this.listFor(room);
    ol.insertBefore(lineElement(line), ol.children[index] ?? null);
  }

  // Remove the first `count` lines of a room (what Room.trim dropped).
  dropOldest(room, count) {
    const ol = this.lists.get(room);
    for (let i = 0; ol && i < count && ol.firstChild; i++) ol.firstChild.remove();
  }

  // Show a room's lines (null: none), keeping each room's scroll position.
  showRoom(room) {
    if (this.shown && this.lists.get(this.shown)) {
      this.scroll.set(this.shown, { stuck: this.stuck, top: this.el.scroller.scrollTop });
      this.lists.get(this.shown).hidden = true;
    }
    this.shown = room;
    this.el.hint.hidden = room !== null;
    if (!room) return;
    this.listFor(room).hidden = false;
    const saved = this.scroll.get(room);
    this.stuck = !saved || saved.stuck;
    if (this.stuck) this.scrollToBottom();
    else this.el.scroller.scrollTop = saved.top;
  }

  renderHeader(room) {
    this.el.roomName.textContent = room ? room.name : "chatd";
    this.el.topic.replaceChildren();
    if (room && room.kind === "channel") {
      if (room.topic) this.el.topic.append(linkify(stripFormatting(room.topic)));
      else this.el.topic.append(h("span", "muted", room.joined ? "No topic" : "Not in this room"));
      if (room.topicBy) this.el.topic.title = `set by ${room.topicBy}`;
      else this.el.topic.removeAttribute("title");
    } else if (room) {
      this.el.topic.append(h("span", "muted", `Private conversation with ${room.name}`));
    }
    this.el.topic.hidden = !room;
    this.renderLoadOlder(room);
  }

  renderLoadOlder(room) {
    const canLoad = room !== null && room.kind === "channel" && room.joined;
    this.el.loadOlder.hidden = !canLoad || room.noOlder;
    this.el.loadOlder.disabled = !canLoad || room.loadingOlder;
    this.el.loadOlder.setAttribute("aria-busy", String(Boolean(room?.loadingOlder)));
    this.el.historyStart.hidden = !canLoad || !room.noOlder;
  }

  // The room list: a button per room with its unread and mention badges.
  renderRooms(rooms, current, onSelect) {
    const items = rooms.map((room) => {
      const button = h("button", "room", room.name);
      button.type = "button";
      button.dataset.room = room.name;
      if (room === current) button.setAttribute("aria-current", "true");
      if (room.kind === "query") button.classList.add("query");
      if (room.kind === "channel" && !room.joined) button.classList.add("parted");
      if (room.mentions) button.append(h("span", "badge mention-badge", String(room.mentions), sr(room.mentions === 1 ? " mention" : " mentions")));
      if (room.unread) button.append(h("span", "badge unread-badge", String(room.unread), sr(" unread")));
      button.addEventListener("click", () => onSelect(room));
      return h("li", null, button);
    });
    // Rebuilt on every change: keep the keyboard focus on the same room's button.
    const focused = this.el.rooms.contains(document.activeElement) ? document.activeElement.dataset.room : null;
    this.el.rooms.replaceChildren(...items);
    if (focused !== null) [...this.el.rooms.querySelectorAll("button.room")].find((b) => b.dataset.room === focused)?.focus();
  }

  // The current room's members: "@op", "+voiced", then the rest.
  renderMembers(room, ranks) {
    const members = room && room.kind === "channel" ? room.sortedMembers(ranks) : [];
    this.el.members.replaceChildren(
      ...members.map((m) => {
        const top = [...ranks].find((r) => m.prefixes.includes(r)) ?? "";
        const li = h("li", "member", h("span", "prefix", top), nickElement(m.nick));
        if (top) li.title = `${m.nick} (${top === "@" ? "operator" : top === "+" ? "voice" : top})`;
        return li;
      }),
    );
    this.el.membersTitle.textContent = room && room.kind === "channel" ? `Members (${members.length})` : "Members";
  }

  // The tab's title, "(3) #lobby · chatd", and the phone's Rooms button badge.
  setTitle(room, unread, mentioned) {
    document.title = `${unread ? `(${unread}) ` : ""}${room ? `${room.name} \u00b7 ` : ""}chatd`;
    const badge = this.el.roomsUnread;
    badge.replaceChildren(String(unread), sr(" unread"));
    badge.hidden = !unread;
    badge.classList.toggle("mention-badge", mentioned > 0);
  }

  togglePane(which, open) {
    const cls = `show-${which}`;
    const on = open ?? !document.body.classList.contains(cls);
    document.body.classList.toggle(cls, on);
    const button = which === "rooms" ? this.el.toggleRooms : this.el.toggleMembers;
    button.setAttribute("aria-expanded", String(on));
  }
}
