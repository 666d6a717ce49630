// DOM helpers. User text only ever reaches the page as text nodes or attribute values, never as markup.

const TOAST_LIFETIME_MS = 8000;
const MAX_TOASTS = 4;
const ANNOUNCEMENTS_KEPT = 5;

export function byId(id) {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`#${id} is missing from index.html`);
  return element;
}

// el("li", { class: "room", dataset: { room: "lobby" } }, "text", childNode)
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "on") for (const [event, listener] of Object.entries(value)) element.addEventListener(event, listener);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export const ICONS = {
  lock: "M7 11V8a5 5 0 0 1 10 0v3M5 11h14v10H5z",
};

// A stroked 24x24 icon, decorative: whatever it means is also said in text.
export function icon(pathData, size = 16) {
  const svg = document.createElementNS(SVG_NS, "svg");
  for (const [name, value] of Object.entries({ viewBox: "0 0 24 24", width: size, height: size, "aria-hidden": "true", focusable: "false" })) {
    svg.setAttribute(name, String(value));
  }
  const path = document.createElementNS(SVG_NS, "path");
  for (const [name, value] of Object.entries({ d: pathData, fill: "none", stroke: "currentColor", "stroke-width": "2", "stroke-linecap": "round", "stroke-linejoin": "round" })) {
    path.setAttribute(name, value);
  }
  svg.append(path);
  return svg;
}

export function show(element, visible = true) {
  element.hidden = !visible;
}

// A stable hue per user, so that a name keeps its colour across rooms and reloads.
function hueOf(username) {
  let hash = 0;
  for (const char of username) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

export function avatar(username) {
  const initial = [...username][0]?.toUpperCase() ?? "?";
  const badge = el("span", { class: "avatar", "aria-hidden": "true" }, initial);
  badge.style.setProperty("--hue", String(hueOf(username)));
  return badge;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });

export function timeElement(isoString) {
  const date = new Date(isoString);
  if (Number.isNaN(date.getTime())) return el("time", {}, "");
  return el("time", { datetime: date.toISOString(), title: dateTimeFormat.format(date) }, timeFormat.format(date));
}

// Readable list: "alice", "alice and bob", "alice, bob and carol".
export function joinNames(names) {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

// Tells screen readers about something that happened away from the focus (a new message). Each
// announcement is a node of its own, so that several in a row, or the same text twice, are all read.
export function announce(text) {
  const announcer = byId("announcer");
  announcer.append(el("p", {}, text));
  while (announcer.childElementCount > ANNOUNCEMENTS_KEPT) announcer.firstElementChild.remove();
}

// kind "error" interrupts screen readers (role alert); other toasts wait their turn (role status).
export function toast({ title, body = "", meta = "", kind = "info", testid = "toast" }) {
  const container = byId("toasts");
  const close = () => item.remove();
  const item = el(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": testid },
    el(
      "div",
      { class: "toast-text" },
      el("p", { class: "toast-title" }, title),
      body ? el("p", { class: "toast-body" }, body) : null,
      meta ? el("p", { class: "toast-meta" }, meta) : null,
    ),
    el("button", { type: "button", class: "icon-button toast-close", "aria-label": "Dismiss", on: { click: close } }, "×"),
  );
  container.append(item);
  while (container.childElementCount > MAX_TOASTS) container.firstElementChild.remove();
  let timer = setTimeout(close, TOAST_LIFETIME_MS);
  // Hovering or focusing a toast keeps it until the pointer or focus leaves, so it can be read.
  const hold = () => clearTimeout(timer);
  const release = () => {
    clearTimeout(timer);
    timer = setTimeout(close, TOAST_LIFETIME_MS / 2);
  };
  item.addEventListener("pointerenter", hold);
  item.addEventListener("pointerleave", release);
  item.addEventListener("focusin", hold);
  item.addEventListener("focusout", release);
  return item;
}

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  resumed: "Resumed",
  stopped: "Disconnected",
  idle: "",
};
const RESUMED_SHOWN_MS = 5000;

// The header's connection indicator. Each socket reports under its own name; the chat room's state is the
// one shown while a room is open, since it is the one the user is watching. The visible text counts down
// every second, so screen readers hear only the transitions, through the announcer.
export class ConnectionStatus {
  constructor() {
    this.container = document.querySelector(".connection");
    this.text = byId("connection-status");
    this.retryButton = byId("reconnect-now");
    this.sources = new Map();
    this.timer = null;
    this.lastName = "idle";
    this.retryButton.addEventListener("click", () => this.shown()?.retryNow?.());
  }

  // state: { name: "connecting" | "connected" | "resumed" | "waiting" | "stopped", retryAt?, retryNow? }
  report(source, state) {
    if (state === null) this.sources.delete(source);
    else this.sources.set(source, state);
    this.render();
  }

  shown() {
    return this.sources.get("chat") ?? this.sources.get("notifications") ?? null;
  }

  render() {
    clearInterval(this.timer);
    clearTimeout(this.timer);
    const state = this.shown();
    const name = state?.name ?? "idle";
    this.announceTransition(name);
    this.container.dataset.state = name;
    show(this.retryButton, name === "waiting");
    if (name === "waiting") {
      const tick = () => {
        const seconds = Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000));
        this.text.textContent = `Reconnecting in ${seconds} s…`;
      };
      tick();
      this.timer = setInterval(tick, 250);
      return;
    }
    this.text.textContent = STATUS_TEXT[name];
    if (name === "resumed") {
      this.timer = setTimeout(() => {
        this.container.dataset.state = "connected";
        this.text.textContent = STATUS_TEXT.connected;
      }, RESUMED_SHOWN_MS);
    }
  }

  announceTransition(name) {
    const previous = this.lastName;
    this.lastName = name;
    if (name === previous) return;
    if (name === "waiting" && previous !== "stopped") announce("Connection lost. Reconnecting.");
    else if (name === "resumed") announce("Reconnected.");
    else if (name === "stopped") announce("Disconnected.");
  }
}
