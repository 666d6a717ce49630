// The client's entry point: signing in and out, and which view and room are shown.
// Routes live in the URL fragment (#/rooms/lobby) so that reloading, bookmarks and Back work.

import { Api } from "./api.js";
import { ChatRoom } from "./chat.js";
import { RoomList, roomHref } from "./rooms.js";
import { clearSession, loadSession, msUntilExpiry, saveSession } from "./session.js";
import { ConnectionStatus, byId, show, toast } from "./ui.js";

// The service's AsyncAPI document lists its WebSocket channels: the notifications module is loaded only
// where the service offers them.
const notificationsModule = fetch(new URL("asyncapi.json", document.baseURI))
  .then((response) => (response.ok ? response.json() : { channels: {} }))
  .then((spec) => ("notifications" in (spec.channels ?? {}) ? import("./notifications.js") : null))
  .catch((error) => {
    console.info("Notifications are not available:", error.message);
    return null;
  });

const HOME = "#/";
const ROOM_ROUTE = /^#\/rooms\/([^/]+)$/;
// Matches the stylesheet's breakpoint: below it, the room list and the open room take turns on screen.
const WIDE_SCREEN = window.matchMedia("(min-width: 720px)");
const SESSION_EXPIRED = "Your session has expired. Please log in again.";
// setTimeout fires at once for longer delays.
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

function roomFromHash(hash) {
  const match = ROOM_ROUTE.exec(hash);
  if (match === null) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null; // a malformed escape: no such room
  }
}

function loginFailure(action, error, username) {
  if (action === "login" && error.status === 401) return "Wrong username or password.";
  if (action === "register" && error.status === 409) return `The username “${username}” is taken. Choose another, or log in.`;
  return error.message;
}

class App {
  constructor() {
    this.api = new Api({ onUnauthorized: () => this.signOut(SESSION_EXPIRED) });
    this.status = new ConnectionStatus();
    this.rooms = new RoomList({
      api: this.api,
      onCreated: (room) => {
        location.hash = roomHref(room.name);
      },
    });
    this.session = null;
    this.chat = null;
    this.notifications = null;
    this.expiryTimer = null;

    this.loginForm = byId("login-form");
    this.loginError = byId("login-error");
    this.loginForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn(event.submitter?.value ?? "login");
    });
    byId("logout-button").addEventListener("click", () => this.signOut());
    byId("back-to-rooms").addEventListener("click", () => {
      location.hash = HOME;
    });
    window.addEventListener("hashchange", () => this.route());
    // Rooms created by others since the list was loaded show up when the user comes back to the tab.
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && this.session) this.rooms.refresh();
    });
  }

  start() {
    const session = loadSession();
    if (session) this.enter(session);
    else this.showLogin("");
  }

  async signIn(action) {
    const username = byId("login-username").value.trim();
    const password = byId("login-password").value;
    const buttons = this.loginForm.querySelectorAll("button");
    buttons.forEach((button) => (button.disabled = true));
    this.loginError.textContent = "";
    try {
      if (action === "register") await this.api.register(username, password);
      const token = await this.api.login(username, password);
      this.api.token = token.access_token;
      const me = await this.api.me();
      this.loginForm.reset();
      this.enter(saveSession({ token: token.access_token, username: me.username, expiresIn: token.expires_in }));
    } catch (error) {
      this.api.token = null;
      this.loginError.textContent = loginFailure(action, error, username);
      byId(error.status === 401 ? "login-password" : "login-username").focus();
    } finally {
      buttons.forEach((button) => (button.disabled = false));
    }
  }

  async enter(session) {
    this.session = session;
    this.api.token = session.token;
    this.scheduleExpiry(session);
    byId("current-user").textContent = session.username;
    show(byId("account"));
    show(byId("login-view"), false);
    show(byId("chat-view"));
    this.route();
    if (this.chat === null) byId("rooms-heading").focus();
    this.rooms.refresh();
    const notifications = await notificationsModule;
    if (notifications && this.session === session) {
      this.notifications = new notifications.NotificationCenter({ api: this.api, session, status: this.status });
      this.notifications.start();
    }
  }

  scheduleExpiry(session) {
    const remaining = msUntilExpiry(session);
    this.expiryTimer = setTimeout(
      () => (remaining > MAX_TIMEOUT_MS ? this.scheduleExpiry(session) : this.signOut(SESSION_EXPIRED)),
      Math.min(remaining, MAX_TIMEOUT_MS),
    );
  }

  // Signing out by choice or because the token is no longer accepted; the route is kept, so that
  // signing in again returns to the same room.
  signOut(message = "") {
    if (this.session === null) return;
    clearTimeout(this.expiryTimer);
    this.closeRoom();
    this.notifications?.stop();
    this.notifications = null;
    clearSession();
    this.session = null;
    this.api.token = null;
    show(byId("account"), false);
    show(byId("chat-view"), false);
    this.showLogin(message);
  }

  showLogin(message) {
    show(byId("login-view"));
    this.loginError.textContent = message;
    byId("login-username").focus();
  }

  route() {
    if (this.session === null) return;
    const name = roomFromHash(location.hash);
    if (name === (this.chat?.name ?? null)) return;
    const previous = this.chat?.name ?? null;
    this.closeRoom();
    this.rooms.setActive(name);
    document.body.classList.toggle("room-open", name !== null);
    show(byId("room-placeholder"), name === null);
    show(byId("room-view"), name !== null);
    if (name === null) {
      if (previous !== null) this.rooms.focus(previous);
      return;
    }
    const chat = new ChatRoom({
      api: this.api,
      session: this.session,
      name,
      status: this.status,
      onGone: (message) => this.leaveRoom(message),
    });
    this.chat = chat;
    byId("room-title").focus();
    chat.open().then(() => {
      // On a wide screen the message box is where the user goes next; on a phone, focusing it would pop up
      // the keyboard over the history, so focus stays on the room's title.
      if (this.chat === chat && WIDE_SCREEN.matches && document.activeElement === byId("room-title")) chat.focus();
    });
  }

  leaveRoom(message) {
    toast({ title: "Cannot open the room", body: message, kind: "error", testid: "toast-error" });
    location.hash = HOME;
  }

  closeRoom() {
    this.chat?.close();
    this.chat = null;
  }
}

new App().start();
