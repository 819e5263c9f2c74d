// commands.js: what the message field does with a line the user typed.
//
// Plain text is said in the current room; "//text" says "/text"; "/name args" runs a
// command from COMMANDS below, through the small interface app.js hands in (ctx):
//   ctx.current()             the shown Room or null
//   ctx.room(name)            the Room of that name, or null
//   ctx.send(cmd, params)     send an IRC line
//   ctx.nick(nick)            ask for a new nick (remembered once the server agrees)
//   ctx.say(room, text, ctcpAction)   PRIVMSG in pieces that fit, shown via echo
//   ctx.info(text) / ctx.error(text)  a local line in the current room
//   ctx.join(name)            JOIN, and show the room once joined
//   ctx.openQuery(nick)       a private conversation, shown
//   ctx.closeRoom(room)       forget a room (a private one, or one we are not in)
//   ctx.requestNames(room)    NAMES, with the answer printed
//   ctx.quit(reason)          QUIT and stay disconnected
// An unknown command gets a local error line; nothing unknown is sent to the server.

import { isChannel, validNick } from "/static/irc.js";

function channelName(name) {
  return isChannel(name) ? name : `#${name}`;
}

// The room a command is about: the current one, which must be a room we are in.
function needChannel(ctx) {
  const room = ctx.current();
  if (!room || room.kind !== "channel") {
    ctx.error("this command works in a room (#name); /join one first");
    return null;
  }
  return room;
}

export const COMMANDS = {
  join: {
    usage: "/join #room",
    help: "join a room (and show it)",
    run(ctx, args) {
      const name = args.split(/\s+/)[0];
      if (!name) return ctx.error("usage: /join #room");
      ctx.join(channelName(name));
    },
  },
  part: {
    usage: "/part [#room] [reason]",
    help: "leave the current room (or #room); closes a private conversation",
    run(ctx, args) {
      let room = ctx.current();
      let reason = args;
      const first = args.split(/\s+/)[0];
      if (isChannel(first)) {
        room = ctx.room(first);
        reason = args.slice(first.length).trim();
        if (!room) return ctx.send("PART", reason ? [first, reason] : [first]);
      }
      if (!room) return ctx.error("usage: /part [#room] [reason]");
      if (room.kind === "query" || !room.joined) return ctx.closeRoom(room);
      ctx.send("PART", reason ? [room.name, reason] : [room.name]);
    },
  },
  nick: {
    usage: "/nick newnick",
    help: "change your nickname",
    run(ctx, args) {
      const nick = args.trim();
      if (!validNick(nick)) return ctx.error("usage: /nick newnick (letters, digits and []\\`_^{|}-)");
      ctx.nick(nick);
    },
  },
  me: {
    usage: "/me action",
    help: "say an action: * you action",
    run(ctx, args) {
      const room = ctx.current();
      if (!room) return ctx.error("join a room first");
      if (!args) return ctx.error("usage: /me action");
      ctx.say(room, args, true);
    },
  },
  msg: {
    usage: "/msg nick text",
    help: "a private message (opens a conversation with nick)",
    run(ctx, args) {
      const m = /^(\S+)\s+(.+)$/.exec(args);
      if (!m) return ctx.error("usage: /msg nick text");
      const [, target, text] = m;
      if (isChannel(target)) {
        const room = ctx.room(target);
        if (room) ctx.say(room, text, false);
        else ctx.send("PRIVMSG", [target, text]);
        return;
      }
      if (!validNick(target)) return ctx.error(`${target} is not a nickname`);
      ctx.say(ctx.openQuery(target), text, false);
    },
  },
  query: {
    usage: "/query nick",
    help: "open a private conversation with nick",
    run(ctx, args) {
      const nick = args.trim();
      if (!validNick(nick)) return ctx.error("usage: /query nick");
      ctx.openQuery(nick);
    },
  },
  topic: {
    usage: "/topic [text]",
    help: "show the room's topic, or set it",
    run(ctx, args) {
      const room = needChannel(ctx);
      if (!room) return;
      if (args) ctx.send("TOPIC", [room.name, args]);
      else if (room.topic) ctx.info(`topic of ${room.name}: ${room.topic}${room.topicBy ? ` (set by ${room.topicBy})` : ""}`);
      else ctx.info(`${room.name} has no topic`);
    },
  },
  names: {
    usage: "/names",
    help: "list the room's members",
    run(ctx) {
      const room = needChannel(ctx);
      if (room) ctx.requestNames(room);
    },
  },
  quit: {
    usage: "/quit [reason]",
    help: "disconnect (Connect comes back)",
    run(ctx, args) {
      ctx.quit(args || "Leaving");
    },
  },
  help: {
    usage: "/help",
    help: "this list",
    run(ctx) {
      ctx.info("commands (start a line with // to say a line that starts with /):");
      for (const c of Object.values(COMMANDS)) ctx.info(`${c.usage} \u2014 ${c.help}`);
    },
  },
};

// Run what the user typed in the message field.
export function runInput(ctx, input) {
  const text = input.replace(/[\r\n\0]+/g, " ");
  if (!text.trim()) return;
  if (text.startsWith("/") && !text.startsWith("//")) {
    const m = /^\/(\S+)\s*(.*)$/s.exec(text);
    const name = m ? m[1].toLowerCase() : "";
    const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : null;
    if (!command) return ctx.error(`unknown command /${name}; /help lists them`);
    return command.run(ctx, m[2].trim());
  }
  const room = ctx.current();
  if (!room) return ctx.error("join a room first: /join #lobby");
  if (room.kind === "channel" && !room.joined) return ctx.error(`you are not in ${room.name}; /join ${room.name}`);
  ctx.say(room, text.startsWith("//") ? text.slice(1) : text, false);
}
