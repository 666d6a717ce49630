// The message list of the open room: ordered by seq (1, 2, 3... in each room), each message shown once,
// older pages loaded on scrolling up, and the view kept at the bottom while the user is reading the latest.

import { avatar, byId, el, show, timeElement } from "./ui.js";

const PAGE_SIZE = 50;
const NEAR_BOTTOM_PX = 80;

export class MessageList {
  // loadPage({ before, limit }) resolves to messages oldest first; without `before`, the newest page.
  // onError(text) reports a page that could not be loaded.
  constructor({ roomName, username, loadPage, onError, signal }) {
    Object.assign(this, { roomName, username, loadPage, onError });
    this.scroller = byId("message-scroller");
    this.list = byId("message-list");
    this.edge = this.scroller.querySelector(".history-edge");
    this.loadOlderButton = byId("load-older");
    this.historyStart = byId("history-start");
    this.jumpButton = byId("jump-to-latest");
    this.items = new Map();
    this.oldestSeq = null;
    this.newestSeq = null;
    this.loading = null;
    this.exhausted = false;

    this.list.replaceChildren();
    show(this.loadOlderButton, false);
    show(this.historyStart, false);
    show(this.jumpButton, false);
    this.loadOlderButton.addEventListener("click", () => this.loadOlder(), { signal });
    this.jumpButton.addEventListener("click", () => this.scrollToBottom(), { signal });
    // Whether the view follows the newest message; the user unpins it by scrolling up.
    this.pinned = true;
    this.scroller.addEventListener("scroll", () => {
      this.pinned = this.nearBottom();
      if (this.pinned) show(this.jumpButton, false);
    }, { signal });
    // The view shrinks when an error shows or the message box grows: keep the newest message in sight.
    this.resizeObserver = new ResizeObserver(() => this.pinned && this.scrollToBottom());
    this.resizeObserver.observe(this.scroller);
    this.observer = new IntersectionObserver((entries) => entries.some((entry) => entry.isIntersecting) && this.fillView(), {
      root: this.scroller,
    });
    signal.addEventListener("abort", () => {
      this.observer.disconnect();
      this.resizeObserver.disconnect();
    });
  }

  // The newest page, shown scrolled to the bottom; then older pages follow as the top comes into view.
  // Throws if the history cannot be read, so that the room is not shown half open.
  async loadLatest() {
    await this.fetchOlder();
    this.scrollToBottom();
    this.observer.observe(this.edge);
  }

  // Resolves to whether the page arrived; a failure is reported, and the user can retry with the button.
  loadOlder() {
    if (this.exhausted) return Promise.resolve(true);
    this.loading ??= this.fetchOlder()
      .then(() => true)
      .catch((error) => {
        this.onError(`Could not load older messages: ${error.message}`);
        return false;
      })
      .finally(() => {
        this.loading = null;
      });
    return this.loading;
  }

  async fetchOlder() {
    const page = await this.loadPage({ before: this.oldestSeq ?? undefined, limit: PAGE_SIZE });
    // Keep what the user was looking at in place while content grows above it.
    const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    for (const message of page) this.insert(message);
    this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
    this.exhausted = page.length < PAGE_SIZE;
    show(this.loadOlderButton, !this.exhausted);
    this.describeHistoryStart();
    show(this.historyStart, this.exhausted);
  }

  // Shown once the whole history is loaded; it invites a first message only while the room is empty.
  describeHistoryStart() {
    if (!this.exhausted) return;
    this.historyStart.textContent =
      this.items.size === 0 ? `No messages in #${this.roomName} yet. Say hello!` : `This is the start of #${this.roomName}.`;
  }

  // The observer fires when the top comes into view, not again while it stays there (after a short page).
  async fillView() {
    while (!this.exhausted && this.edgeInView()) {
      if (!(await this.loadOlder())) return;
    }
  }

  edgeInView() {
    return this.edge.getBoundingClientRect().bottom >= this.scroller.getBoundingClientRect().top;
  }

  nearBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.scroller;
    return scrollHeight - scrollTop - clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.pinned = true;
    show(this.jumpButton, false);
  }

  // A message that arrived over the socket: follow it if the user was at the bottom or wrote it.
  addLive(message) {
    const follow = this.pinned || message.user === this.username;
    if (!this.insert(message)) return false;
    this.describeHistoryStart();
    if (follow) this.scrollToBottom();
    else show(this.jumpButton, true);
    return true;
  }

  // Returns false for a message already shown (a replay overlapping what history returned).
  insert(message) {
    const seq = message.seq;
    if (this.items.has(seq)) return false;
    const item = this.render(message);
    this.items.set(seq, item);
    if (this.newestSeq === null || seq > this.newestSeq) {
      this.list.append(item);
    } else {
      const next = [...this.list.children].find((candidate) => Number(candidate.dataset.seq) > seq);
      this.list.insertBefore(item, next ?? null);
    }
    this.newestSeq = Math.max(this.newestSeq ?? seq, seq);
    this.oldestSeq = Math.min(this.oldestSeq ?? seq, seq);
    return true;
  }

  // The server skipped the messages before `oldestSeq` that this list lacks (more than a replay sends):
  // say so where they would be. The room's history still has them.
  markTruncated(oldestSeq) {
    const skipped = oldestSeq - (this.newestSeq ?? 0) - 1;
    if (skipped <= 0) return;
    const notice = el(
      "li",
      { class: "history-truncated muted", "data-testid": "history-truncated", dataset: { seq: oldestSeq - 0.5 } },
      `History truncated: ${skipped} earlier message${skipped === 1 ? " was" : "s were"} not loaded.`,
    );
    this.list.append(notice);
    this.newestSeq = oldestSeq - 1;
  }

  render(message) {
    const mine = message.user === this.username;
    return el(
      "li",
      { class: mine ? "message mine" : "message", "data-testid": "message", dataset: { id: message.id, seq: message.seq, user: message.user } },
      avatar(message.user),
      el(
        "div",
        { class: "message-body" },
        el("p", { class: "message-meta" }, el("span", { class: "message-author", "data-testid": "message-author" }, message.user), " ", timeElement(message.created_at)),
        el("p", { class: "message-text", "data-testid": "message-text" }, message.text),
      ),
    );
  }
}
