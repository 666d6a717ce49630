// One open chat room: its history, its live socket, who is here and who is typing, and the message box.

import { MessageList } from "./messages.js";
import { PresenceList, TypingIndicator } from "./presence.js";
import { ReconnectingSocket, bearerProtocols, webSocketUrl } from "./socket.js";
import { announce, byId, show, toast } from "./ui.js";

// The server's token bucket allows about ten frames a second; typing notices stay far below that.
const TYPING_SEND_INTERVAL_MS = 3000;
// How long the echo of a sent message may take before the message counts as not delivered.
const ECHO_WAIT_MS = 2000;
const RESUME_ECHO_WAIT_MS = 4000;
const POLICY_VIOLATION = 1008;
const MESSAGE_TOO_BIG = 1009;
const UNSENT_RETURNED = "Your unsent message is back in the message box.";

const ERROR_TEXT = {
  rate_limited: "You are sending too fast. Wait a moment, then send again.",
  too_large: "That message is too long.",
  forbidden: "You are not allowed to do that in this room.",
  unavailable: "Messages cannot be stored right now. Try again in a moment.",
};

export class ChatRoom {
  // onGone(text): the room cannot be opened (no such room, or private); the app returns to the list.
  constructor({ api, session, name, status, onGone }) {
    Object.assign(this, { api, session, name, status, onGone });
    this.username = session.username;
    this.lifetime = new AbortController();
    this.unconfirmed = [];
    this.lastTypingSentAt = 0;
    this.unread = 0;
    this.room = null;
    this.socket = null;

    this.title = byId("room-title");
    this.input = byId("message-input");
    this.sendButton = byId("send-button");
    this.error = byId("chat-error");
    this.presence = new PresenceList({ username: this.username });
    this.typing = new TypingIndicator();
    this.messages = new MessageList({
      roomName: name,
      username: this.username,
      loadPage: (page) => this.api.messages(name, page),
      onError: (text) => this.showError(text),
      signal: this.lifetime.signal,
    });
    this.reset();
    this.bindComposer();
  }

  get closed() {
    return this.lifetime.signal.aborted;
  }

  reset() {
    this.title.textContent = this.name;
    byId("room-address").textContent = `#${this.name}`;
    byId("message-input-label").textContent = `Message #${this.name}`;
    this.input.value = "";
    this.input.disabled = true;
    this.sendButton.disabled = true;
    this.error.textContent = "";
    byId("invite").open = false;
    show(byId("invite"), false);
  }

  async open() {
    try {
      this.room = await this.api.getRoom(this.name);
    } catch (error) {
      if (this.closed) return;
      if (error.status === 404) this.onGone(`The room #${this.name} does not exist, or it is private and you are not a member.`);
      else this.showError(`Could not open the room: ${error.message}`);
      return;
    }
    if (this.closed) return;
    this.title.textContent = this.room.title;
    this.updateTitle();
    this.showInvite();
    this.input.disabled = false;
    try {
      await this.messages.loadLatest();
    } catch (error) {
      if (!this.closed) this.showError(`Could not load the history: ${error.message}`);
      return;
    }
    if (this.closed) return;
    this.socket = new ReconnectingSocket({
      // Resume after the newest seq shown: the server replays everything after it, then goes live.
      url: () => webSocketUrl(`ws/rooms/${encodeURIComponent(this.name)}`, { since: this.messages.newestSeq ?? 0 }),
      protocols: () => bearerProtocols(this.session.token),
      onOpen: ({ resumed }) => this.connected(resumed),
      onFrame: (frame) => this.receive(frame),
      onClose: (event, { opened }) => this.disconnected(event, opened),
      onState: (state) => this.status.report("chat", state),
    });
    this.socket.start();
    document.addEventListener("visibilitychange", () => !document.hidden && this.markRead(), { signal: this.lifetime.signal });
  }

  close() {
    this.lifetime.abort();
    this.socket?.stop();
    this.typing.clear();
    this.status.report("chat", null);
    this.unread = 0;
    this.updateTitle();
  }

  focus() {
    this.input.focus();
  }

  // --- the socket ---

  connected(resumed) {
    this.sendButton.disabled = false;
    this.presence.setStale(false);
    if (resumed) this.checkEchoes(RESUME_ECHO_WAIT_MS);
  }

  async disconnected(event, opened) {
    this.sendButton.disabled = true;
    this.presence.setStale(true);
    this.typing.clear();
    // A refused handshake and a policy close look alike to a browser; the HTTP API tells what went wrong.
    if (!opened || event.code === POLICY_VIOLATION) {
      try {
        await this.api.getRoom(this.name);
      } catch (error) {
        if (error.status === 401) return "stop"; // the app has signed the user out
        if (error.status === 404) {
          this.onGone(`You can no longer see the room #${this.name}.`);
          return "stop";
        }
        return "retry"; // the server is unreachable: wait for it
      }
    }
    if (event.code === POLICY_VIOLATION) {
      toast({ title: "The server closed the connection", body: event.reason || "Policy violation", kind: "error", testid: "toast-error" });
    } else if (event.code === MESSAGE_TOO_BIG) {
      this.showError(ERROR_TEXT.too_large);
    }
    return "retry";
  }

  receive(frame) {
    switch (frame.type) {
      case "chat.message":
        return this.receiveMessage(frame);
      case "history.truncated":
        return this.messages.markTruncated(frame.oldest_seq);
      case "chat.typing":
        return frame.user !== this.username && this.typing.start(frame.user);
      case "presence.state":
        return this.presence.replace(frame.users);
      case "presence.join":
        return this.presence.add(frame.user);
      case "presence.leave":
        this.typing.stop(frame.user);
        return this.presence.remove(frame.user);
      case "presence.diff":
        // Also sent to the users it names: this connection is here, whatever an earlier tab's leave says.
        for (const user of frame.leaves) this.typing.stop(user);
        return this.presence.apply(
          frame.joins,
          frame.leaves.filter((user) => user !== this.username),
        );
      case "error":
        this.showError(ERROR_TEXT[frame.code] ?? frame.detail ?? frame.code);
        return this.checkEchoes(ECHO_WAIT_MS);
      default:
        console.warn("Ignored a frame of unknown type", frame.type);
    }
  }

  receiveMessage(message) {
    if (!this.messages.addLive(message)) return;
    this.typing.stop(message.user);
    if (message.user === this.username) {
      const index = this.unconfirmed.indexOf(message.text);
      if (index !== -1) this.unconfirmed.splice(index, 1);
      return;
    }
    announce(`${message.user}: ${message.text.slice(0, 200)}`);
    if (document.hidden) {
      this.unread += 1;
      this.updateTitle();
    }
  }

  // --- sending ---

  bindComposer() {
    const signal = this.lifetime.signal;
    const form = byId("composer");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    }, { signal });
    this.input.addEventListener("keydown", (event) => {
      // Enter sends; Shift+Enter is a new line; Enter that confirms an IME composition is neither.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    }, { signal });
    this.input.addEventListener("input", () => {
      this.fitInput();
      this.sendTyping();
    }, { signal });
  }

  send() {
    const text = this.input.value.trim();
    if (text === "") return;
    if (!this.socket?.send({ type: "chat.message", text })) {
      this.showError("Not connected. Your message stays here until it can be sent.");
      return;
    }
    this.error.textContent = "";
    this.unconfirmed.push(text);
    this.lastTypingSentAt = 0;
    this.input.value = "";
    this.fitInput();
  }

  sendTyping() {
    const now = Date.now();
    if (this.input.value.trim() === "" || now - this.lastTypingSentAt < TYPING_SEND_INTERVAL_MS) return;
    if (this.socket?.send({ type: "chat.typing" })) this.lastTypingSentAt = now;
  }

  // A sent message whose echo has not come back by now was refused or lost with the connection:
  // it returns to the message box rather than vanish.
  checkEchoes(delay) {
    setTimeout(() => {
      if (this.closed || this.unconfirmed.length === 0) return;
      const lost = this.unconfirmed.splice(0);
      this.input.value = [...lost, this.input.value.trim()].filter(Boolean).join("\n");
      this.fitInput();
      if (!this.error.textContent.endsWith(UNSENT_RETURNED)) this.showError(`${this.error.textContent} ${UNSENT_RETURNED}`.trim());
    }, delay);
  }

  // The box grows with its text up to the height the stylesheet allows, then scrolls.
  fitInput() {
    this.input.style.height = "auto";
    this.input.style.height = `${this.input.scrollHeight}px`;
  }

  // --- the rest of the room header ---

  showInvite() {
    const allowed = this.room.is_private && this.room.owner === this.username;
    show(byId("invite"), allowed);
    if (!allowed) return;
    const form = byId("invite-form");
    const result = byId("invite-result");
    const input = byId("invite-username");
    result.textContent = "";
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const username = input.value.trim();
      try {
        await this.api.addMember(this.name, username);
        result.textContent = `${username} can now join #${this.name}.`;
        input.value = "";
      } catch (error) {
        result.textContent = error.message;
      }
    }, { signal: this.lifetime.signal });
  }

  showError(text) {
    this.error.textContent = text;
  }

  markRead() {
    this.unread = 0;
    this.updateTitle();
  }

  updateTitle() {
    const base = this.closed || !this.room ? "Chat" : `${this.room.title} · Chat`;
    document.title = this.unread ? `(${this.unread}) ${base}` : base;
  }
}
