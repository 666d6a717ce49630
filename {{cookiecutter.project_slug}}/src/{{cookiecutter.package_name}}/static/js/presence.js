// Who is in the open room, and who of them is typing.

import { byId, el, joinNames } from "./ui.js";

// A little longer than the interval at which clients repeat `chat.typing`, so that someone typing
// steadily shows steadily.
const TYPING_SHOWN_MS = 4000;

export class PresenceList {
  constructor({ username }) {
    this.username = username;
    this.users = new Set();
    this.list = byId("presence-list");
    this.count = byId("presence-count");
    this.render();
  }

  replace(users) {
    this.users = new Set(users);
    this.render();
  }

  add(user) {
    this.users.add(user);
    this.render();
  }

  remove(user) {
    this.users.delete(user);
    this.render();
  }

  // A room's arrivals and departures of one tick, rendered once.
  apply(joins, leaves) {
    for (const user of joins) this.users.add(user);
    for (const user of leaves) this.users.delete(user);
    this.render();
  }

  // While disconnected the list may be out of date; it is dimmed until the next `presence.state`.
  setStale(stale) {
    this.list.toggleAttribute("data-stale", stale);
  }

  render() {
    const users = [...this.users].sort((a, b) => a.localeCompare(b));
    this.list.replaceChildren(
      ...users.map((user) =>
        el(
          "li",
          { class: "presence-item", "data-testid": "presence-item", dataset: { user } },
          el("span", { class: "presence-dot", "aria-hidden": "true" }),
          user,
          user === this.username ? el("span", { class: "muted" }, " (you)") : null,
        ),
      ),
    );
    this.count.textContent = users.length ? `(${users.length})` : "";
  }
}

export class TypingIndicator {
  constructor() {
    this.element = byId("typing-indicator");
    this.timers = new Map();
    this.render();
  }

  start(user) {
    clearTimeout(this.timers.get(user));
    this.timers.set(user, setTimeout(() => this.stop(user), TYPING_SHOWN_MS));
    this.render();
  }

  stop(user) {
    if (!this.timers.has(user)) return;
    clearTimeout(this.timers.get(user));
    this.timers.delete(user);
    this.render();
  }

  clear() {
    for (const user of [...this.timers.keys()]) this.stop(user);
  }

  render() {
    const users = [...this.timers.keys()];
    if (users.length === 0) this.element.textContent = "";
    else if (users.length === 1) this.element.textContent = `${users[0]} is typing…`;
    else if (users.length <= 3) this.element.textContent = `${joinNames(users)} are typing…`;
    else this.element.textContent = "Several people are typing…";
  }
}
