// Notifications from /ws/notifications, shown as toasts.

import { ReconnectingSocket, bearerProtocols, webSocketUrl } from "./socket.js";
import { toast } from "./ui.js";

// The MQTT topic filters followed after sign-in; `{username}` stands for the signed-in user.
// The user's own notifications (`POST /notifications` with a `username`) arrive under `users/<username>/`.
export const TOPICS = ["users/{username}/#"];

const POLICY_VIOLATION = 1008;

// Payloads are whatever the publisher sent: a string, or an object with a title and a text, or anything.
function describe(data) {
  if (typeof data === "string") return { title: "Notification", body: data };
  const fields = data !== null && typeof data === "object" ? data : {};
  const title = typeof fields.title === "string" ? fields.title : "Notification";
  const text = [fields.text, fields.message, fields.body].find((value) => typeof value === "string");
  return { title, body: text ?? (title === "Notification" ? JSON.stringify(data) : "") };
}

export class NotificationCenter {
  constructor({ api, session, status }) {
    Object.assign(this, { api, session, status });
    this.topics = TOPICS.map((topic) => topic.replaceAll("{username}", session.username));
    this.socket = new ReconnectingSocket({
      url: () => webSocketUrl("ws/notifications"),
      protocols: () => bearerProtocols(this.session.token),
      // Subscriptions belong to a connection: every new one subscribes again.
      onOpen: () => this.topics.forEach((topic) => this.socket.send({ type: "subscribe", topic })),
      onFrame: (frame) => this.receive(frame),
      onClose: (event, { opened }) => this.disconnected(event, opened),
      onState: (state) => this.status.report("notifications", state),
    });
  }

  start() {
    this.socket.start();
  }

  stop() {
    this.socket.stop();
    this.status.report("notifications", null);
  }

  receive(frame) {
    if (frame.type === "notification") {
      toast({ ...describe(frame.data), meta: frame.topic, testid: "toast" });
    } else if (frame.type === "error") {
      toast({ title: "Notifications", body: frame.detail ?? frame.code, kind: "error", testid: "toast-error" });
    }
  }

  async disconnected(event, opened) {
    if (opened && event.code !== POLICY_VIOLATION) return "retry";
    try {
      await this.api.me();
    } catch (error) {
      if (error.status === 401) return "stop"; // the app has signed the user out
    }
    return "retry";
  }
}
