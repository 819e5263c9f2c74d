// conn.js: the WebSocket to chatd, kept open.
//
// One IRC line per text message, both ways (IRCv3 WebSocket, subprotocol
// "text.ircv3.net"). When the socket closes without the user asking, it is opened again
// after an exponential backoff with jitter: about 1 s, doubling up to 30 s, reset once
// the server has welcomed us (the page calls registered()). A server that closes with
// 1012 (Service Restart, what chatd sends when it stops) or 1001 (Going Away) lost all
// its clients at once: the first attempt after it is spread over 1 to 5 s instead, so
// they do not all come back in the same instant. A silent connection is
// probed with PING and dropped when it stays silent, so a laptop waking from sleep
// reconnects instead of staring at a dead socket. What a line means is app.js's
// business; this module only moves lines and reports its state:
//   "connecting", "open", "reconnecting in Ns", "closed".

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
const JITTER = 0.2; // each delay is the backoff times 0.8 .. 1.2
// The first attempt after a restart close comes FIRST_DELAY_MS plus up to this later.
// (1012's registration suggests a random 5 to 30 s; on a cluster the other nodes are up
// already and a restarted server is back within seconds, so chatd spreads the clients
// over a shorter window: 10,000 pages come back at about 2,500 a second.)
const RESTART_SPREAD_MS = 4000;
// Close codes that say "the server stops or restarts: come back".
const RESTART_CODES = new Set([1001, 1012]);
const PROBE_AFTER_MS = 60000; // silence before we send a PING
const DROP_AFTER_MS = 120000; // silence before we give the socket up

export function socketUrl(loc = location) {
  return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/";
}

export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** attempt);
  return Math.min(MAX_DELAY_MS, Math.round(base * (1 - JITTER + 2 * JITTER * random())));
}

// The delay before the first attempt after a restart close (see RESTART_CODES).
export function restartDelay(random = Math.random) {
  return Math.round(FIRST_DELAY_MS + RESTART_SPREAD_MS * random());
}

export class Connection {
  // handlers: onOpen(), onLine(text), onClose(willRetry, restart), onStatus(text)
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.ws = null;
    this.wanted = false; // should a socket be open?
    this.attempt = 0;
    this.retryTimer = null;
    this.countdownTimer = null;
    this.retryAt = 0;
    this.lastHeard = 0;
    this.probeTimer = null;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  // Open the socket now (a click on Connect, or the network coming back).
  connect() {
    this.wanted = true;
    this.cancelRetry();
    if (this.ws) return;
    this.h.onStatus("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url, ["text.ircv3.net"]);
    } catch (err) {
      console.error("chatd: cannot open a WebSocket", err);
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      this.startProbe();
      this.h.onOpen();
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws || typeof event.data !== "string") return;
      this.lastHeard = Date.now();
      // One line per message; tolerate a server that sends several or a CR LF.
      for (const line of event.data.split(/\r?\n/)) if (line) this.h.onLine(line);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopProbe();
      const restart = RESTART_CODES.has(event.code);
      this.h.onClose(this.wanted, restart);
      if (this.wanted) this.scheduleRetry(restart);
      else this.h.onStatus("closed");
    };
    // An error is always followed by a close event, which does the work.
    ws.onerror = () => {};
  }

  send(line) {
    if (!this.isOpen) return false;
    this.ws.send(line);
    return true;
  }

  // The server welcomed us: the next drop starts the backoff from 1 s again.
  registered() {
    this.attempt = 0;
  }

  // Close on purpose (a /quit, a nick refused at first login): no reconnect.
  close() {
    this.wanted = false;
    this.cancelRetry();
    this.abandon(1000);
    this.h.onStatus("closed");
  }

  // Give up the socket as if the network had dropped it (a dead connection): the
  // backoff starts. Used instead of waiting for a close handshake that may never end.
  drop() {
    if (this.abandon(4000) && this.wanted) this.scheduleRetry();
  }

  abandon(code) {
    const ws = this.ws;
    if (!ws) return false;
    this.ws = null;
    this.stopProbe();
    try {
      ws.close(code);
    } catch {
      // already closing
    }
    this.h.onClose(this.wanted);
    return true;
  }

  // The browser says the network is back: do not wait out the backoff.
  retryNow() {
    if (this.wanted && !this.ws) {
      this.attempt = 0;
      this.connect();
    }
  }

  // `restart`: the server closed with a restart code; a first attempt is spread wider.
  scheduleRetry(restart = false) {
    this.cancelRetry();
    const delay = restart && this.attempt === 0 ? restartDelay() : backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    const tick = () => {
      const left = Math.max(1, Math.ceil((this.retryAt - Date.now()) / 1000));
      this.h.onStatus(`reconnecting in ${left}s`);
    };
    tick();
    this.countdownTimer = setInterval(tick, 1000);
    this.retryTimer = setTimeout(() => {
      this.cancelRetry();
      this.connect();
    }, delay);
  }

  cancelRetry() {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdownTimer);
    this.retryTimer = this.countdownTimer = null;
  }

  startProbe() {
    this.stopProbe();
    this.probeTimer = setInterval(() => {
      const silent = Date.now() - this.lastHeard;
      if (silent > DROP_AFTER_MS) this.drop();
      else if (silent > PROBE_AFTER_MS) this.send(`PING :keepalive-${Date.now()}`);
    }, PROBE_AFTER_MS / 4);
  }

  stopProbe() {
    clearInterval(this.probeTimer);
    this.probeTimer = null;
  }
}
