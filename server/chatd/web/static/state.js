// state.js: what the page knows, with no DOM and no socket.
//
// A Room holds one conversation (a "#room", or a private one named after the other
// nick): its lines kept sorted by (time, msgid) and de-duplicated by msgid, so history
// fetched in any order (LATEST on join, BEFORE for "Load older", AFTER on reconnect)
// lands in place exactly once; its members with their prefixes; its topic; its unread
// and mention counts. Also here: the stable nick colour, the mention test, and the
// small localStorage wrapper the page remembers its nick, rooms and theme with.

import { casefold } from "/static/irc.js";

// Lines kept per room (and in its DOM list); older ones are dropped as new ones come.
export const SCROLLBACK = 1000;
// "Load older" may grow a room's scrollback up to this many lines.
export const SCROLLBACK_MAX = 5000;
// Nick colours: classes nick-c0 .. nick-c15 in style.css.
export const NICK_COLOURS = 16;

// A stable colour class for a nick: FNV-1a of its casefolded form, mixed (FNV's low
// bits depend only on the characters' low bits) by MurmurHash3's finaliser, mod 16.
export function nickColour(nick) {
  let h = 0x811c9dc5;
  for (const ch of casefold(nick)) {
    h ^= ch.codePointAt(0);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return `nick-c${(h >>> 0) % NICK_COLOURS}`;
}

// Characters a nick may hold besides letters and digits: a mention is the nick with
// none of these (nor a letter or digit) right before or after it.
const NICK_CHARS = "A-Za-z0-9\\[\\]\\\\`_^{|}\\-";

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\\-]/g, "\\$&");
}

let mentionNick = null;
let mentionRx = null;

// Does `text` name `nick` as a word (ASCII case-insensitive)?
export function mentions(text, nick) {
  if (!nick) return false;
  if (nick !== mentionNick) {
    mentionNick = nick;
    mentionRx = new RegExp(`(^|[^${NICK_CHARS}])${escapeRegExp(nick)}($|[^${NICK_CHARS}])`, "i");
  }
  return mentionRx.test(text);
}

// A sort key: the server's time (ISO 8601 in UTC, fixed width, so strings sort in time
// order), then the msgid (time-ordered within a millisecond).
export function lineKey(time, id) {
  return `${time}\u0000${id ?? ""}`;
}

export class Room {
  constructor(name, kind) {
    this.name = name;
    this.key = casefold(name);
    this.kind = kind; // "channel" or "query"
    this.lines = []; // sorted by .key
    this.ids = new Set(); // msgids of this.lines
    this.members = new Map(); // casefolded nick -> {nick, prefixes}
    this.pendingNames = null; // members collected from 353 until 366
    this.topic = "";
    this.topicBy = null;
    this.unread = 0;
    this.mentions = 0;
    this.joined = false; // a member now
    this.wanted = false; // joined by the user: rejoined after a reconnect, remembered
    this.noOlder = false; // "Load older" reached the start of the history
    this.loadingOlder = false;
    this.scrollback = SCROLLBACK;
    this.localSeq = 0;
  }

  // Insert a line in order. Returns its index, or -1 when its msgid is here already.
  add(line) {
    if (line.id) {
      if (this.ids.has(line.id)) return -1;
      this.ids.add(line.id);
    }
    const lines = this.lines;
    let lo = 0;
    let hi = lines.length;
    if (hi === 0 || lines[hi - 1].key <= line.key) lo = hi; // the usual case: newest
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (lines[mid].key <= line.key) lo = mid + 1;
      else hi = mid;
    }
    lines.splice(lo, 0, line);
    return lo;
  }

  // Where a line made here (an error, a notice from the page) sorts: right after the
  // newest line from the server, so it shows where it happened whatever the clocks
  // say; lines made here in a row keep their order. Returns {key, base}, both for the
  // line object (base: the server line's key it follows).
  localPlace(nowIso) {
    const last = this.lines[this.lines.length - 1];
    const base = last ? (last.base ?? last.key) : lineKey(nowIso, "");
    this.localSeq += 1;
    return { key: `${base}\u0001${String(this.localSeq).padStart(10, "0")}`, base };
  }

  // Drop the oldest lines beyond `limit` (the scrollback); returns how many went.
  trim(limit = this.scrollback) {
    const excess = this.lines.length - limit;
    if (excess <= 0) return 0;
    for (const line of this.lines.splice(0, excess)) if (line.id) this.ids.delete(line.id);
    this.noOlder = false;
    return excess;
  }

  // Room for `count` more older lines (a "Load older" answer), within SCROLLBACK_MAX.
  growScrollback(count) {
    this.scrollback = Math.min(SCROLLBACK_MAX, Math.max(this.scrollback, this.lines.length + count));
  }

  oldestMessage() {
    return this.lines.find((l) => l.id) ?? null;
  }

  newestMessage() {
    for (let i = this.lines.length - 1; i >= 0; i--) if (this.lines[i].id) return this.lines[i];
    return null;
  }

  member(nick) {
    return this.members.get(casefold(nick)) ?? null;
  }

  setMember(nick, prefixes = "") {
    this.members.set(casefold(nick), { nick, prefixes });
  }

  removeMember(nick) {
    return this.members.delete(casefold(nick));
  }

  renameMember(oldNick, newNick) {
    const m = this.member(oldNick);
    if (!m) return false;
    this.members.delete(casefold(oldNick));
    this.members.set(casefold(newNick), { nick: newNick, prefixes: m.prefixes });
    return true;
  }

  // Members sorted: operators, then voiced, then the rest; by casefolded nick within.
  // `ranks` is the PREFIX order, e.g. "@+".
  sortedMembers(ranks) {
    const rank = (m) => {
      for (let i = 0; i < ranks.length; i++) if (m.prefixes.includes(ranks[i])) return i;
      return ranks.length;
    };
    return [...this.members.values()].sort(
      (a, b) => rank(a) - rank(b) || (casefold(a.nick) < casefold(b.nick) ? -1 : casefold(a.nick) > casefold(b.nick) ? 1 : 0),
    );
  }
}

// The rooms, in the order they appear in the room list.
export class Rooms {
  constructor() {
    this.byKey = new Map();
  }

  get(name) {
    return this.byKey.get(casefold(name)) ?? null;
  }

  open(name, kind) {
    let room = this.get(name);
    if (!room) {
      room = new Room(name, kind);
      this.byKey.set(room.key, room);
    }
    return room;
  }

  close(name) {
    return this.byKey.delete(casefold(name));
  }

  // A private conversation changes name with the other person's nick.
  rename(oldName, newName) {
    const room = this.get(oldName);
    if (!room || this.get(newName)) return null;
    this.byKey.delete(room.key);
    room.name = newName;
    room.key = casefold(newName);
    this.byKey.set(room.key, room);
    return room;
  }

  all() {
    return [...this.byKey.values()];
  }

  channels() {
    return this.all().filter((r) => r.kind === "channel");
  }
}

// localStorage, JSON-encoded under "chatd." keys; a browser that refuses storage
// (private mode, quota) only loses the memory, never the page.
export const store = {
  get(name, fallback) {
    try {
      const raw = localStorage.getItem(`chatd.${name}`);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(name, value) {
    try {
      if (value === null || value === undefined) localStorage.removeItem(`chatd.${name}`);
      else localStorage.setItem(`chatd.${name}`, JSON.stringify(value));
    } catch {
      // storage full or refused: nothing to do
    }
  },
};
