// A WebSocket that reconnects by itself, with exponential backoff and jitter.

const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
// A connection that stays up this long counts as healthy: the next loss starts the backoff from scratch.
const STABLE_AFTER_MS = 5000;

// Equal jitter: half of the exponential delay is fixed, half random. Clients that lost the same server
// spread out instead of returning all at once, and the wait is never so short that retries hammer it.
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return ceiling / 2 + (random() * ceiling) / 2;
}

// A ws:// or wss:// URL relative to the page, like the HTTP API's.
export function webSocketUrl(path, query = {}) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
  }
  return url;
}

// Browsers cannot set an Authorization header on a WebSocket, so the token travels as the second of two
// offered subprotocols; the server answers with `bearer`.
export function bearerProtocols(token) {
  return ["bearer", token];
}

export class ReconnectingSocket {
  // url(): the URL of the next attempt, asked anew each time (a chat room resumes after its last id).
  // protocols(): the subprotocols of the next attempt (the token may have changed).
  // onOpen({ resumed }): the socket is open; resumed is true after a reconnection.
  // onFrame(frame): a JSON frame from the server.
  // onClose(event, { opened }): the socket closed on its own; returns (or resolves to) "retry" or "stop".
  // onState({ name, retryAt?, retryNow? }): for the connection indicator.
  constructor({ url, protocols, onOpen, onFrame, onClose, onState }) {
    Object.assign(this, { url, protocols, onOpen, onFrame, onClose, onState });
    this.socket = null;
    this.attempt = 0;
    this.everOpened = false;
    this.retryTimer = null;
    this.stableTimer = null;
    this.stopped = true;
    this.retryWhenOnline = () => this.retryNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.retryWhenOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.retryWhenOnline);
    clearTimeout(this.retryTimer);
    clearTimeout(this.stableTimer);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000);
  }

  get isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  // Sends when open; returns whether it did, so the caller can keep what it could not send.
  send(frame) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  // Skip the rest of the wait (the user asked, or the browser is back online).
  retryNow() {
    if (this.stopped || this.retryTimer === null) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  connect() {
    this.retryTimer = null;
    this.onState({ name: "connecting" });
    const socket = new WebSocket(this.url(), this.protocols());
    this.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      opened = true;
      const resumed = this.everOpened;
      this.everOpened = true;
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, STABLE_AFTER_MS);
      this.onState({ name: resumed ? "resumed" : "connected" });
      this.onOpen({ resumed });
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        console.warn("Ignored a frame that is not JSON", event.data);
        return;
      }
      this.onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      clearTimeout(this.stableTimer);
      this.socket = null;
      this.handleClose(event, opened);
    });
  }

  async handleClose(event, opened) {
    const decision = await this.onClose(event, { opened });
    if (this.stopped) return;
    if (decision === "stop") {
      this.stop();
      this.onState({ name: "stopped" });
      return;
    }
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.onState({ name: "waiting", retryAt: Date.now() + delay, retryNow: () => this.retryNow() });
  }
}
