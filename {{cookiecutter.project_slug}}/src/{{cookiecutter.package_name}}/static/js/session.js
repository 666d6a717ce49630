// The signed-in user's token. sessionStorage keeps it per tab and drops it when the tab closes.

const STORAGE_KEY = "chat.session";
// Treat a token as expired slightly early, so that a request never leaves with one about to lapse.
const EXPIRY_MARGIN_MS = 30_000;

export function saveSession({ token, username, expiresIn }) {
  const session = { token, username, expiresAt: Date.now() + expiresIn * 1000 };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  return session;
}

export function loadSession() {
  let session;
  try {
    session = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null");
  } catch {
    session = null;
  }
  if (!session?.token || !session.username || !(session.expiresAt - EXPIRY_MARGIN_MS > Date.now())) {
    clearSession();
    return null;
  }
  return session;
}

export function clearSession() {
  sessionStorage.removeItem(STORAGE_KEY);
}

export function msUntilExpiry(session) {
  return Math.max(0, session.expiresAt - EXPIRY_MARGIN_MS - Date.now());
}
