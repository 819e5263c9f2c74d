// conn.js: the WebSocket to chatd, kept open.
//
// One IRC line per text message, both ways (IRCv3 WebSocket, subprotocol
// "text.ircv3.net"). When the socket closes without the user asking, it is opened again
// after an exponential backoff with jitter: about 1 s, doubling up to 30 s, reset once
// the server has welcomed us (the page calls registered()). A silent connection is
// probed with PING and dropped when it stays silent, so a laptop waking from sleep
// reconnects instead of staring at a dead socket. What a line means is app.js's
// business; this module only moves lines and reports its state:
//   "connecting", "open", "reconnecting in Ns", "closed".

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
const JITTER = 0.2; // each delay is the backoff times 0.8 .. 1.2
const PROBE_AFTER_MS = 60000; // silence before we send a PING
const DROP_AFTER_MS = 120000; // silence before we give the socket up

export function socketUrl(loc = location) {
  return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/";
}

export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** attempt);
  return Math.min(MAX_DELAY_MS, Math.round(base * (1 - JITTER + 2 * JITTER * random())));
}

export class Connection {
  // handlers: onOpen(), onLine(text), onClose(willRetry), onStatus(text)
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
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopProbe();
      this.h.onClose(this.wanted);
      if (this.wanted) this.scheduleRetry();
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

  scheduleRetry() {
    this.cancelRetry();
    const delay = backoffDelay(this.attempt);
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
