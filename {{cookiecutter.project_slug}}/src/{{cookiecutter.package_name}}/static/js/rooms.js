// The room list and the form that creates a room.

import { ICONS, byId, el, icon, show } from "./ui.js";

export function roomHref(name) {
  return `#/rooms/${encodeURIComponent(name)}`;
}

// "Team News!" -> "team-news": a suggestion for the room's address, which the user may still edit.
function addressFrom(title) {
  return title
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 64)
    .replace(/-+$/, "");
}

function roomIcon(room) {
  if (!room.is_private) return el("span", { class: "room-icon", "aria-hidden": "true" }, "#");
  return el("span", { class: "room-icon" }, icon(ICONS.lock, 14), el("span", { class: "visually-hidden" }, "Private:"));
}

export class RoomList {
  constructor({ api, onCreated }) {
    this.api = api;
    this.onCreated = onCreated;
    this.rooms = [];
    this.active = null;
    this.list = byId("room-list");
    this.empty = byId("rooms-empty");
    this.error = byId("rooms-error");
    this.form = byId("create-room-form");
    this.titleInput = byId("room-title-input");
    this.nameInput = byId("room-name-input");
    this.privateInput = byId("room-private-input");
    this.formError = byId("create-room-error");
    this.nameEdited = false;

    byId("refresh-rooms").addEventListener("click", () => this.refresh());
    this.titleInput.addEventListener("input", () => {
      if (!this.nameEdited) this.nameInput.value = addressFrom(this.titleInput.value);
    });
    this.nameInput.addEventListener("input", () => {
      this.nameEdited = this.nameInput.value !== "";
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
  }

  async refresh() {
    try {
      this.rooms = await this.api.listRooms();
      this.error.textContent = "";
    } catch (error) {
      this.error.textContent = `Could not load the rooms: ${error.message}`;
      return;
    }
    this.render();
  }

  find(name) {
    return this.rooms.find((room) => room.name === name) ?? null;
  }

  setActive(name) {
    this.active = name;
    for (const link of this.list.querySelectorAll("a[data-room]")) {
      if (link.dataset.room === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  // After leaving a room on a narrow screen, focus returns to where the user came from.
  focus(name) {
    const link = [...this.list.querySelectorAll("a[data-room]")].find((candidate) => candidate.dataset.room === name);
    (link ?? byId("rooms-heading")).focus();
  }

  render() {
    this.list.replaceChildren(
      ...this.rooms.map((room) =>
        el(
          "li",
          {},
          el(
            "a",
            {
              href: roomHref(room.name),
              class: "room-link",
              "data-testid": "room-item",
              dataset: { room: room.name },
              "aria-current": room.name === this.active ? "page" : null,
            },
            roomIcon(room),
            el("span", { class: "room-link-text" }, el("span", { class: "room-link-title" }, room.title), el("span", { class: "room-link-name" }, room.name)),
          ),
        ),
      ),
    );
    show(this.empty, this.rooms.length === 0);
  }

  async create() {
    this.formError.textContent = "";
    const submit = this.form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const room = await this.api.createRoom({
        name: this.nameInput.value.trim(),
        title: this.titleInput.value.trim(),
        isPrivate: this.privateInput.checked,
      });
      this.form.reset();
      this.nameEdited = false;
      byId("new-room").open = false;
      await this.refresh();
      this.onCreated(room);
    } catch (error) {
      this.formError.textContent =
        error.status === 409 ? `The address “${this.nameInput.value.trim()}” is taken. Choose another.` : error.message;
    } finally {
      submit.disabled = false;
    }
  }
}
