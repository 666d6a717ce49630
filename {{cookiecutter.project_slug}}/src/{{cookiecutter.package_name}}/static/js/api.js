// The HTTP API. URLs are relative to the page, so the client works wherever the service is mounted,
// directly or behind the gateway.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// FastAPI answers `{"detail": "..."}`, or for validation errors `{"detail": [{"loc": [...], "msg": "..."}]}`.
function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((problem) => {
        const field = (problem.loc ?? []).filter((part) => part !== "body" && part !== "query").join(".");
        return field ? `${field}: ${problem.msg}` : problem.msg;
      })
      .join("; ");
  }
  return null;
}

async function errorFrom(response) {
  let detail = null;
  try {
    detail = describeDetail((await response.json()).detail);
  } catch {
    // Not JSON (a proxy's error page, say): the status line is all there is to tell.
  }
  return new ApiError(response.status, detail || `${response.status} ${response.statusText}`.trim());
}

export class Api {
  // onUnauthorized is called when the server refuses the token (expired or revoked).
  constructor({ onUnauthorized }) {
    this.token = null;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, { json, form, query, authenticated = true } = {}) {
    const url = new URL(path, document.baseURI);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    const headers = { Accept: "application/json" };
    if (authenticated && this.token) headers.Authorization = `Bearer ${this.token}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = new URLSearchParams(form);
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body });
    } catch {
      throw new ApiError(0, "Cannot reach the server. Check your connection and try again.");
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (authenticated && response.status === 401) this.onUnauthorized();
      throw error;
    }
    return response.status === 204 ? null : response.json();
  }

  // -> { access_token, token_type, expires_in }
  login(username, password) {
    return this.request("POST", "auth/token", { form: { username, password }, authenticated: false });
  }

  register(username, password) {
    return this.request("POST", "auth/register", { json: { username, password }, authenticated: false });
  }

  me() {
    return this.request("GET", "users/me");
  }

  // -> [{ name, title, is_private, owner, created_at }]
  listRooms() {
    return this.request("GET", "rooms");
  }

  getRoom(room) {
    return this.request("GET", `rooms/${encodeURIComponent(room)}`);
  }

  createRoom({ name, title, isPrivate }) {
    return this.request("POST", "rooms", { json: { name, title, is_private: isPrivate } });
  }

  addMember(room, username) {
    return this.request("POST", `rooms/${encodeURIComponent(room)}/members`, { json: { username } });
  }

  // Oldest first; without `before`, the newest page. -> [{ id, room, user, text, created_at }]
  messages(room, { before, limit }) {
    return this.request("GET", `rooms/${encodeURIComponent(room)}/messages`, { query: { before, limit } });
  }
}
