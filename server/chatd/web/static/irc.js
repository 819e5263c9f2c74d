// irc.js: the IRC wire format for the browser, with no I/O and no DOM.
//
// parseLine() turns one server line (the WebSocket carries one line per message,
// without CR LF) into {tags, source, nick, command, params}; formatLine() builds a
// client line from a command and its parameters. Also here: IRCv3 tag (un)escaping,
// the ASCII casemapping chatd announces (CASEMAPPING=ascii), CTCP ACTION, IRC
// formatting codes (stripped for display), splitting a long text so each PRIVMSG
// fits 512 bytes, and the nick/room-name checks the page needs.

const TAG_UNESCAPES = { ":": ";", s: " ", "\\": "\\", r: "\r", n: "\n" };

// IRCv3 message-tags: "\:" is ";", "\s" a space, "\\" a backslash, "\r" and "\n"
// CR and LF; a backslash before any other character is dropped, as is a lone one at
// the end.
export function unescapeTag(value) {
  let out = "";
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c !== "\\") {
      out += c;
      continue;
    }
    i++;
    if (i < value.length) out += TAG_UNESCAPES[value[i]] ?? value[i];
  }
  return out;
}

export function escapeTag(value) {
  return value.replace(/[\\; \r\n]/g, (c) =>
    ({ "\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n" })[c],
  );
}

// One line from the server. Returns null for an empty line. Parameters follow the
// usual grammar: spaces separate them, a ":" starts the trailing one.
export function parseLine(line) {
  let pos = 0;
  const tags = Object.create(null);
  const skipSpaces = () => {
    while (line[pos] === " ") pos++;
  };
  skipSpaces();
  if (line[pos] === "@") {
    let end = line.indexOf(" ", pos);
    if (end < 0) end = line.length;
    for (const item of line.slice(pos + 1, end).split(";")) {
      if (!item) continue;
      const eq = item.indexOf("=");
      if (eq < 0) tags[item] = "";
      else tags[item.slice(0, eq)] = unescapeTag(item.slice(eq + 1));
    }
    pos = end;
    skipSpaces();
  }
  let source = null;
  if (line[pos] === ":") {
    let end = line.indexOf(" ", pos);
    if (end < 0) end = line.length;
    source = line.slice(pos + 1, end);
    pos = end;
    skipSpaces();
  }
  const params = [];
  let command = null;
  while (pos < line.length) {
    if (command !== null && line[pos] === ":") {
      params.push(line.slice(pos + 1));
      break;
    }
    let end = line.indexOf(" ", pos);
    if (end < 0) end = line.length;
    const word = line.slice(pos, end);
    if (command === null) command = word.toUpperCase();
    else params.push(word);
    pos = end;
    skipSpaces();
  }
  if (command === null) return null;
  return { tags, source, nick: nickOf(source), command, params };
}

// "nick!user@host" -> "nick"; a server name stays as it is.
export function nickOf(source) {
  if (source === null) return null;
  const bang = source.indexOf("!");
  return bang < 0 ? source : source.slice(0, bang);
}

// A client line. Every parameter but the last must be a non-empty word with no space
// and no leading ":"; the last may hold anything but CR, LF and NUL. Breaking these
// rules is a bug in the page, so it throws.
export function formatLine(command, params = [], tags = null) {
  let out = "";
  if (tags) {
    const items = Object.entries(tags).map(([k, v]) => (v === "" ? k : `${k}=${escapeTag(v)}`));
    if (items.length) out += "@" + items.join(";") + " ";
  }
  out += command;
  params.forEach((p, i) => {
    p = String(p);
    if (/[\r\n\0]/.test(p)) throw new Error(`CR, LF or NUL in a parameter of ${command}`);
    const last = i === params.length - 1;
    if (last && (p === "" || p.includes(" ") || p.startsWith(":"))) out += " :" + p;
    else if (p === "" || p.includes(" ") || p.startsWith(":"))
      throw new Error(`bad middle parameter of ${command}: ${JSON.stringify(p)}`);
    else out += " " + p;
  });
  return out;
}

// CASEMAPPING=ascii: only A-Z fold.
export function casefold(name) {
  return name.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

export function isChannel(name) {
  return typeof name === "string" && name.startsWith("#");
}

// A nickname as IRC allows it (RFC 2812 letters, digits and []\`_^{|}-, not starting
// with a digit or "-"); chatd applies its own rules, this only catches typos early.
export function validNick(nick) {
  return /^[A-Za-z[\]\\`_^{|}][A-Za-z0-9[\]\\`_^{|}-]{0,29}$/.test(nick);
}

// "\x01ACTION waves\x01" -> {ctcp: "ACTION", text: "waves"}; null for plain text.
export function parseCtcp(text) {
  if (!text.startsWith("\x01")) return null;
  const body = text.slice(1, text.endsWith("\x01") && text.length > 1 ? -1 : undefined);
  const sp = body.indexOf(" ");
  return sp < 0
    ? { ctcp: body.toUpperCase(), text: "" }
    : { ctcp: body.slice(0, sp).toUpperCase(), text: body.slice(sp + 1) };
}

export function action(text) {
  return `\x01ACTION ${text}\x01`;
}

// IRC formatting codes (bold, colours, italics, ...) are dropped for display; the
// text itself is always rendered as text.
export function stripFormatting(text) {
  return text.replace(/\x03(\d{1,2}(,\d{1,2})?)?|\x04([0-9a-fA-F]{6}(,[0-9a-fA-F]{6})?)?|[\x02\x0f\x11\x16\x1d\x1e\x1f]/g, "");
}

const encoder = new TextEncoder();

export function utf8Length(text) {
  return encoder.encode(text).length;
}

// Split a text into pieces of at most maxBytes UTF-8 bytes, cutting at the last space
// of a piece when there is one, never inside a character.
export function splitText(text, maxBytes) {
  const pieces = [];
  let rest = text;
  while (utf8Length(rest) > maxBytes) {
    let cut = 0;
    let bytes = 0;
    for (const ch of rest) {
      const n = utf8Length(ch);
      if (bytes + n > maxBytes) break;
      bytes += n;
      cut += ch.length;
    }
    const space = rest.lastIndexOf(" ", cut);
    if (space > cut / 2) cut = space;
    pieces.push(rest.slice(0, cut));
    rest = rest.slice(cut).replace(/^ /, "");
  }
  if (rest || !pieces.length) pieces.push(rest);
  return pieces;
}
