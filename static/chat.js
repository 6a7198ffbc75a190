// Live room client: one WebSocket per room page (protocol: docs/protocol.md).
//
// The server renders the latest messages into the page; this module resumes
// from the last rendered seq, so nothing is shown twice. Messages are kept in
// seq order whatever order frames arrive in. Own messages show as pending
// until acked; unacked sends are re-sent on reconnect with their original
// client_id, which the server deduplicates.
//
// One file on purpose: the page loads it through static_url(), which puts a
// version on the URL for caching, and modules it imported would not get one.
//
// Limits and close codes come from the page (#room's data-config, built by
// chat/web/rendering.py: client_config), never from copies kept here.

const BACKOFF_BASE_MS = 500;
// Short enough that a reader never waits long once the server is back (the
// banner also offers "Reconnect now"); full jitter spreads a restart's herd.
const BACKOFF_MAX_MS = 10000;
// After this many failed tries in a row the banner stops calling it a blip:
// the server cannot be reached (the browser itself says when it is offline).
const UNREACHABLE_AFTER_ATTEMPTS = 6;
// Retrying a refused send: the server's retry_after when it gives one.
const RETRY_FALLBACK_MS = 2000;
// The states in which the page is trying to connect again by itself.
const RETRYING_STATES = new Set(["reconnecting", "unreachable", "offline"]);
const RETRY_JITTER_MS = 1000;
const RETRYABLE_ERRORS = new Set(["rate_limited", "unavailable"]);
const NEAR_BOTTOM_PX = 80;
// Typing: tell the room at most this often while typing; show someone as
// typing this long after their last notice.
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOWN_FOR_MS = 6000;
// The client_id of a scroll-back fetch: an error about it is not about the outbox.
const OLDER_ID_PREFIX = "older-";
// Likewise for edits and deletions.
const REVISION_ID_PREFIX = "revise-";
// Revisions of messages not shown yet (they may come later) kept at most.
const MAX_EARLY_UPDATES = 1000;
// What a pending message says while it is on its way, and while it cannot be.
const SENDING = "Sending…";
const WAITING = "Waiting for the connection…";
const SESSION_ENDED_REASON = "your session ended; it is sent when you sign in again";
// New messages read out by the live region: at most this many characters each,
// and this many kept in it.
const ANNOUNCE_MAX_CHARS = 200;
const ANNOUNCE_KEEP = 5;

function newClientId() {
  // randomUUID only exists in secure contexts; a page served over plain http
  // from another host still needs unique ids.
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function formatTime(iso) {
  const date = new Date(iso);
  return isNaN(date) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// The full date and time, for a time's hover text.
function formatFull(iso) {
  const date = new Date(iso);
  return isNaN(date) ? "" : date.toLocaleString([], { dateStyle: "full", timeStyle: "short" });
}

function localDay(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

// "Today", "Yesterday", or the date in words, in the reader's time zone.
function formatDay(date) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (localDay(date) === localDay(today)) return "Today";
  if (localDay(date) === localDay(yesterday)) return "Yesterday";
  return date.toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

// When a message in the list was written (a pending one: when it was sent).
function writtenAt(li) {
  const iso = li.querySelector("time").getAttribute("datetime");
  return iso ? new Date(iso) : new Date(Number(li.dataset.sentAt) || Date.now());
}

function nearBottom() {
  return window.innerHeight + window.scrollY >= document.body.offsetHeight - NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  window.scrollTo(0, document.body.scrollHeight);
}

/**
 * The message list is one Tab stop, not two or three per message (Edit and
 * Delete on each made 29 stops in one room). The arrow keys move between
 * messages, Home and End to the first and last; a message's own buttons are
 * Tab stops only while the focus is in that message. The stop is the newest
 * message until the reader moves it.
 */
function keyboardList(list) {
  if (!list) return;
  let current = null;
  const messagesIn = (root) => (root.matches("li.message") ? [root] : [...root.querySelectorAll("li.message")]);
  const setButtons = (li, tabbable) => {
    for (const button of li.querySelectorAll("button")) button.tabIndex = tabbable ? 0 : -1;
  };
  const makeCurrent = (li) => {
    if (current && current !== li) current.tabIndex = -1;
    current = li;
    li.tabIndex = 0;
  };
  const adopt = (li) => {
    if (li !== current) li.tabIndex = -1;
    if (!li.contains(document.activeElement)) setButtons(li, false);
  };
  const lastMessage = () => {
    const all = list.querySelectorAll("li.message");
    return all[all.length - 1] ?? null;
  };
  // The stop follows the newest message until the reader moves it elsewhere.
  let followNewest = true;
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const node of change.addedNodes) if (node.nodeType === 1) messagesIn(node).forEach(adopt);
    }
    if ((followNewest || !current?.isConnected) && !list.contains(document.activeElement)) {
      const last = lastMessage();
      if (last) makeCurrent(last);
    }
  }).observe(list, { childList: true, subtree: true });
  messagesIn(list).forEach(adopt);
  const last = lastMessage();
  if (last) makeCurrent(last);

  list.addEventListener("focusin", (event) => {
    const li = event.target.closest("li.message");
    if (!li) return;
    makeCurrent(li);
    setButtons(li, true);
    followNewest = li === lastMessage();
  });
  list.addEventListener("focusout", (event) => {
    const li = event.target.closest("li.message");
    if (li && !li.contains(event.relatedTarget)) setButtons(li, false);
  });
  list.addEventListener("keydown", (event) => {
    if (event.target.closest("textarea, input")) return; // the editor keeps its keys
    const li = event.target.closest("li.message");
    if (!li) return;
    const all = [...list.querySelectorAll("li.message")];
    const at = all.indexOf(li);
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: all.length - 1 }[event.key];
    if (to === undefined || !all[to]) return;
    event.preventDefault();
    all[to].focus();
  });
}

/**
 * The list ends above the dock, whatever the dock shows: a banner, a notice
 * and a grown message box make it taller (a third of a phone's screen), and
 * a fixed padding left the newest messages under it. A reader at the bottom
 * stays at the bottom as it grows.
 */
function keepClearOfDock(dock) {
  if (!dock) return;
  const root = document.documentElement;
  new ResizeObserver(() => {
    const stick = nearBottom();
    root.style.setProperty("--dock-height", `${Math.ceil(dock.getBoundingClientRect().height)}px`);
    if (stick) scrollToBottom();
  }).observe(dock);
}

// Index of the first element of ascending `sorted` greater than `value`.
function upperBound(sorted, value) {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (sorted[mid] <= value) low = mid + 1;
    else high = mid;
  }
  return low;
}

// How long to wait before re-sending a refused message. Jitter, so the
// retries of several tabs (or of a burst from one) do not land together.
function retryDelayMs(frame) {
  const wait = Number.isFinite(frame.retry_after) && frame.retry_after >= 0
    ? frame.retry_after * 1000
    : RETRY_FALLBACK_MS;
  return wait + Math.random() * RETRY_JITTER_MS;
}

/**
 * The #messages list: stored messages in seq order, then own pending ones.
 *
 * Lookups go through a Map and a sorted array of seqs rather than the DOM,
 * so a 500-message history frame costs O(n log n), not a scan per message.
 */
class MessageList {
  #list;
  #empty;
  #template;
  #bySeq = new Map(); // seq -> <li>
  #seqs = []; // ascending
  // Pending elements in the order they sit at the end of the list (a Set
  // keeps insertion order), so the first one is found without a DOM query.
  #pending = new Set();
  #lastSeq;
  #userId;
  // Newest version of messages revised before they are shown (seq -> MSG):
  // an edit can overtake its message, or concern one not scrolled to yet.
  #early = new Map();
  // The text each shown message was written as (seq -> body), for editing.
  #sources = new Map();

  #groupWithinMs;

  #moderator;

  constructor(list, empty, template, lastSeq, userId, groupWithinMs, moderator) {
    this.#groupWithinMs = groupWithinMs;
    this.#moderator = moderator;
    this.#list = list;
    this.#empty = empty;
    this.#template = template;
    this.#lastSeq = lastSeq;
    this.#userId = userId;
    // Adopt the history the server rendered, once.
    for (const li of list.querySelectorAll("li[data-seq]")) {
      const seq = Number(li.dataset.seq);
      this.#bySeq.set(seq, li);
      this.#seqs.push(seq);
      const source = li.querySelector(".body").dataset.source;
      if (source !== undefined) this.#sources.set(seq, source);
      this.#showActions(li);
    }
    this.#seqs.sort((a, b) => a - b);
    if (this.#seqs.length) this.#lastSeq = Math.max(this.#lastSeq, this.#seqs[this.#seqs.length - 1]);
  }

  /** The highest seq held: where a reconnect resumes. */
  get lastSeq() {
    return this.#lastSeq;
  }

  /** The lowest seq shown: where scrolling back continues (undefined when empty). */
  get firstSeq() {
    return this.#seqs[0];
  }

  has(seq) {
    return this.#bySeq.has(seq);
  }

  /** Insert a stored message at its seq position; false if it is already shown. */
  add(message) {
    if (this.#bySeq.has(message.seq)) return false;
    const newer = this.#early.get(message.seq);
    if (newer) {
      this.#early.delete(message.seq);
      if (newer.rev > (message.rev || 0)) message = newer;
    }
    const li = this.#render(message, false);
    const index = upperBound(this.#seqs, message.seq);
    // Before the next higher seq; with none, after the last stored message
    // and before any pending ones.
    const before = index < this.#seqs.length
      ? this.#bySeq.get(this.#seqs[index])
      : this.#pending.values().next().value ?? null;
    this.#list.insertBefore(li, before);
    this.#layout(li);
    this.#layout(li.nextElementSibling);
    if (index === this.#seqs.length) this.#seqs.push(message.seq);
    else this.#seqs.splice(index, 0, message.seq);
    this.#bySeq.set(message.seq, li);
    if (message.seq > this.#lastSeq) this.#lastSeq = message.seq;
    this.#empty.hidden = true;
    return true;
  }

  /** A line about the room itself ("bob joined"): shown where it happened, never stored. */
  addNote(text) {
    const li = document.createElement("li");
    li.className = "note";
    const day = document.createElement("p");
    day.className = "day";
    day.hidden = true;
    const time = document.createElement("time");
    time.dateTime = new Date().toISOString();
    time.textContent = formatTime(time.dateTime);
    li.append(day, time, ` ${text}`);
    this.#list.insertBefore(li, this.#pending.values().next().value ?? null);
    this.#layout(li);
    this.#empty.hidden = true;
  }

  /** A newer version of a message (edited, deleted): redraw it if shown, else keep it for when it is. */
  update(message) {
    const li = this.#bySeq.get(message.seq);
    if (li) {
      if (Number(li.dataset.rev || 0) < message.rev) this.#fill(li, message);
      return;
    }
    const known = this.#early.get(message.seq);
    if (known && known.rev >= message.rev) return;
    this.#early.set(message.seq, message);
    if (this.#early.size > MAX_EARLY_UPDATES) this.#early.delete(this.#early.keys().next().value);
  }

  /** The text of a shown message as its author wrote it (undefined if deleted or not shown). */
  sourceOf(seq) {
    return this.#sources.get(seq);
  }

  /** Show an own message not yet stored, at the end; returns its element. */
  addPending(message, status = SENDING) {
    const li = this.#render({ ...message, user_id: this.#userId }, true);
    li.dataset.sentAt = Date.now();
    this.#setStatus(li, status);
    this.#list.appendChild(li);
    this.#layout(li);
    this.#pending.add(li);
    this.#empty.hidden = true;
    return li;
  }

  /** What every pending message says: on its way, or waiting for the connection. */
  setPendingStatus(status) {
    for (const li of this.#pending) this.#setStatus(li, status);
  }

  /** A failed message sent again: pending once more, at the end of the list. */
  retry(li, status = SENDING) {
    li.classList.remove("failed");
    li.classList.add("pending");
    li.querySelector(".retry").hidden = true;
    li.removeAttribute("data-state");
    this.#setStatus(li, status);
    const next = li.nextElementSibling;
    this.#list.appendChild(li);
    this.#layout(next);
    this.#layout(li);
    this.#pending.add(li);
  }

  /** Take a failed message out of the list for good. */
  discard(li) {
    this.#pending.delete(li);
    const next = li.nextElementSibling;
    li.remove();
    this.#layout(next);
    this.#empty.hidden = this.#list.children.length > 0;
  }

  /** Remove a pending element: its stored version is about to be added. */
  removePending(li) {
    this.#pending.delete(li);
    const next = li.nextElementSibling;
    li.remove();
    this.#layout(next);
  }

  /**
   * Keep a refused message in view, marked failed with the reason in words.
   * ``retryable``: it offers Retry and Discard (not when nothing can send it
   * from this page, e.g. the session ended).
   */
  markFailed(li, reason, retryable = true) {
    this.#pending.delete(li);
    li.classList.remove("pending");
    li.classList.add("failed");
    li.dataset.state = "failed";
    this.#setStatus(li, `Not sent: ${reason}`);
    li.querySelector(".retry").hidden = !retryable;
  }

  #setStatus(li, text) {
    const status = li.querySelector(".status");
    status.textContent = text;
    status.hidden = !text;
  }

  /** The server renders times, days and grouping in UTC; redo them in the reader's time zone. */
  localizeTimes() {
    for (const time of this.#list.querySelectorAll("time[datetime]")) {
      time.textContent = formatTime(time.getAttribute("datetime"));
      time.title = formatFull(time.getAttribute("datetime"));
    }
    for (const li of this.#list.children) this.#layout(li);
    for (const edited of this.#list.querySelectorAll(".edited[data-edited-at]")) {
      edited.title = `edited ${new Date(edited.dataset.editedAt).toLocaleString()}`;
    }
  }

  // Fill in a clone of <template id="message-template"> (templates/_message.html),
  // so the server and this script draw a message with the same markup.
  #render(message, pending) {
    const li = document.importNode(this.#template.content.firstElementChild, true);
    li.classList.toggle("pending", pending);
    this.#fill(li, message);
    return li;
  }

  #fill(li, message) {
    if (message.seq !== undefined) li.dataset.seq = message.seq;
    if (message.id) li.dataset.id = message.id;
    if (message.user_id) li.dataset.userId = message.user_id;
    li.dataset.rev = message.rev || 0;
    li.dataset.clientId = message.client_id;
    li.querySelector(".author").textContent = message.username;
    li.querySelector(".author").title = message.username;
    const time = li.querySelector("time");
    if (message.created_at) {
      time.dateTime = message.created_at;
      time.textContent = formatTime(message.created_at);
      time.title = formatFull(message.created_at);
    }
    const deleted = Boolean(message.deleted_at);
    // The reader's own message, stored: sent.
    li.querySelector(".sent-mark").hidden = message.seq === undefined || message.user_id !== this.#userId;
    if (message.seq !== undefined) this.#setStatus(li, "");
    li.classList.toggle("deleted", deleted);
    const edited = li.querySelector(".edited");
    edited.hidden = !message.edited_at || deleted;
    if (message.edited_at) edited.title = `edited ${new Date(message.edited_at).toLocaleString()}`;
    const body = li.querySelector(".body");
    if (!deleted && message.html) {
      // Rendered and sanitised by the server when stored (chat/services/formatting.py),
      // the same markup the page was rendered with; a bare body is only ever text.
      body.innerHTML = message.html;
      for (const mention of body.querySelectorAll(".mention")) {
        mention.classList.toggle("mention-me", mention.dataset.userId === this.#userId);
      }
    } else {
      body.textContent = deleted ? "message deleted" : message.body;
    }
    body.classList.toggle("plain", deleted || !message.html);
    if (message.seq !== undefined) {
      if (deleted) this.#sources.delete(message.seq);
      else this.#sources.set(message.seq, message.body);
    }
    this.#showActions(li);
  }

  // Under the previous message's name when the same person wrote it a moment
  // before, on the same day; and the day named where a new one starts. Done
  // for a message and the one after it wherever the list changes.
  #layout(li) {
    if (!li) return;
    const previous = li.previousElementSibling;
    const when = writtenAt(li);
    const before = previous ? writtenAt(previous) : null;
    const newDay = !before || localDay(before) !== localDay(when);
    const day = li.querySelector(".day");
    day.hidden = !newDay;
    day.textContent = newDay ? formatDay(when) : "";
    li.classList.toggle(
      "continued",
      !newDay && previous.dataset.userId === li.dataset.userId && when - before <= this.#groupWithinMs,
    );
  }

  // Edit and Delete on the reader's own stored messages that still exist;
  // Delete on everyone's for the room's owner and moderators.
  #showActions(li) {
    const actions = li.querySelector(".actions");
    if (!actions) return;
    const own = li.dataset.userId === this.#userId;
    actions.hidden = !li.dataset.seq || li.classList.contains("deleted") || !(own || this.#moderator);
    actions.querySelector('[data-action="edit"]').hidden = !own;
  }
}

/**
 * Own messages not yet stored, in the order they were written: the room's outbox.
 *
 * Each goes out once per connection, in order. A refusal that means "later"
 * (rate_limited, unavailable) pauses the whole queue for the time the server
 * gives and puts that message and every one after it back to unsent: the
 * server refuses the sends that came after a refused one until it is sent
 * again (docs/protocol.md), so resending from it stores them in the order
 * typed. Acks take messages out; nothing is dropped on the way.
 */
class Outbox {
  #entries = new Map(); // client_id -> {body, element, sent}; insertion order is typing order
  #send;
  #pausedUntil = 0;
  #resumeTimer = null;

  /** @param {(clientId: string, body: string) => boolean} send false when not connected */
  constructor(send) {
    this.#send = send;
  }

  /** Queue a message at the end and send what may go now. */
  add(clientId, body, element) {
    this.#entries.set(clientId, { body, element, sent: false });
    this.pump();
  }

  /** Remove and return the entry (undefined if none): it was stored or refused for good. */
  take(clientId) {
    const entry = this.#entries.get(clientId);
    this.#entries.delete(clientId);
    return entry;
  }

  /** The entry of ``clientId``, left in the outbox (undefined if none). */
  peek(clientId) {
    return this.#entries.get(clientId);
  }

  /** [client_id, body] pairs, in the order they were written. */
  unsent() {
    return [...this.#entries].map(([clientId, entry]) => [clientId, entry.body]);
  }

  /** A new connection: whatever the last one sent may not have arrived; send it all again. */
  restart() {
    for (const entry of this.#entries.values()) entry.sent = false;
    this.pump();
  }

  /** Send every unsent message, in order, unless paused or disconnected. */
  pump() {
    if (this.#resumeTimer !== null) return;
    for (const [clientId, entry] of this.#entries) {
      if (entry.sent) continue;
      if (!this.#send(clientId, entry.body)) return; // offline: the next hello restarts
      entry.sent = true;
    }
  }

  /** ``clientId`` was refused for now: pause, then send it and everything after it again. */
  retryFrom(clientId, delayMs) {
    if (!this.#entries.has(clientId)) return;
    let from = false;
    for (const [id, entry] of this.#entries) {
      from ||= id === clientId;
      if (from) entry.sent = false;
    }
    const until = Date.now() + delayMs;
    if (until <= this.#pausedUntil) return;
    this.#pausedUntil = until;
    clearTimeout(this.#resumeTimer);
    this.#resumeTimer = setTimeout(() => {
      this.#resumeTimer = null;
      this.pump();
    }, delayMs);
  }
}

/**
 * Where a reconnect resumes edits and deletions from: every revision up to
 * ``cursor`` has been shown. The server's ``updates`` frame (on each connect)
 * sets it; live ``message_updated`` frames move it on only while their revs
 * follow each other, since a rev skipped may still come.
 */
class RevisionCursor {
  #cursor;
  #seen = new Set(); // revs above the cursor already shown

  constructor(cursor) {
    this.#cursor = cursor;
  }

  get cursor() {
    return this.#cursor;
  }

  /** Every revision up to ``rev`` has been shown (the server says so). */
  caughtUp(rev) {
    this.#cursor = Math.max(this.#cursor, rev);
    this.#advance();
  }

  seen(rev) {
    if (rev > this.#cursor) this.#seen.add(rev);
    this.#advance();
  }

  #advance() {
    while (this.#seen.has(this.#cursor + 1)) this.#seen.delete(++this.#cursor);
    for (const rev of this.#seen) if (rev <= this.#cursor) this.#seen.delete(rev);
  }
}

/**
 * The room socket: connects, reconnects with backoff, reports its state and
 * hands on parsed frames.
 *
 * States: "connecting" (the first attempt), "connected" (hello received),
 * "reconnecting" (waiting to try again; the detail says when), "unreachable"
 * (many attempts in a row failed while the browser is online), "offline"
 * (the browser says it is), and two that end it: "session-ended" and
 * "removed".
 *
 * A browser does not say why a handshake was refused, so when a socket
 * closes before hello the connection asks the server's access probe
 * (GET /rooms/{id}/access): 401 means the session ended (signed out, or
 * Back after signing out), 404 or 403 that this room is gone for the
 * reader; anything else, or no answer, is an outage to ride out.
 */
class RoomConnection {
  #url;
  #accessUrl;
  #sessionEndedCode;
  #removedCode;
  #onFrame;
  #onState;
  #socket = null;
  #attempt = 0;
  #reconnectTimer = null;
  #stopped = false;
  #state = null;

  /**
   * @param {object} options
   * @param {() => string} options.url called on every connect, so it resumes from the latest seq
   * @param {string} options.accessUrl the probe that says why a handshake failed
   * @param {number} options.sessionEndedCode the close code after which reconnecting is pointless
   * @param {number} options.removedCode the close code for "no longer a member of this room" (likewise)
   * @param {(frame: object) => void} options.onFrame
   * @param {(state: string, detail: object) => void} options.onState
   */
  constructor({ url, accessUrl, sessionEndedCode, removedCode, onFrame, onState }) {
    this.#url = url;
    this.#accessUrl = accessUrl;
    this.#sessionEndedCode = sessionEndedCode;
    this.#removedCode = removedCode;
    this.#onFrame = onFrame;
    this.#onState = onState;
  }

  get state() {
    return this.#state;
  }

  start() {
    this.#setState("connecting");
    this.#connect();
  }

  /** Send a frame if the socket is open; false if it is not (the caller keeps it). */
  send(frame) {
    if (!this.#socket || this.#socket.readyState !== WebSocket.OPEN) return false;
    this.#socket.send(JSON.stringify(frame));
    return true;
  }

  /** Close for good (the page is going away): no reconnect. */
  stop() {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    if (this.#socket) this.#socket.close();
  }

  /** Try now rather than after the backoff (the network is back, the tab is shown, the reader asked). */
  reconnectNow() {
    if (this.#socket || this.#stopped) return;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#attempt = 0;
    this.#setState("reconnecting", { retryAt: null });
    this.#connect();
  }

  #setState(state, detail = {}) {
    this.#state = state;
    this.#onState(state, detail);
  }

  #end(state) {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    this.#setState(state);
  }

  #connect() {
    const socket = new WebSocket(this.#url());
    this.#socket = socket;
    let greeted = false;
    socket.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      // hello, not the socket's open event, counts as connected: the server
      // may accept the socket and close it at once (1013, the room could not
      // be loaded), and that must keep backing off.
      if (frame.type === "hello") {
        greeted = true;
        this.#attempt = 0;
        this.#setState("connected");
      }
      this.#onFrame(frame);
    };
    socket.onclose = (event) => {
      if (this.#socket === socket) this.#socket = null;
      if (this.#stopped) return;
      if (event.code === this.#sessionEndedCode) this.#end("session-ended");
      else if (event.code === this.#removedCode) this.#end("removed");
      else if (greeted) this.#scheduleReconnect();
      else {
        this.#whyRefused().then((ended) => {
          if (ended) this.#end(ended);
          else if (!this.#socket) this.#scheduleReconnect(); // unless a new attempt is under way
        });
      }
    };
  }

  // Why a socket closed before hello: "session-ended", "removed", or null to keep trying.
  async #whyRefused() {
    try {
      const answer = await fetch(this.#accessUrl, { cache: "no-store", credentials: "same-origin" });
      if (answer.status === 401) return "session-ended";
      if (answer.status === 403 || answer.status === 404) return "removed";
    } catch {
      // The server is not answering at all: an outage, keep trying.
    }
    return null;
  }

  #scheduleReconnect() {
    if (this.#stopped || this.#reconnectTimer) return;
    this.#attempt += 1;
    // Exponential backoff with full jitter, so a restarted server is not hit
    // by every client at the same instant.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.#attempt - 1));
    const delay = Math.random() * ceiling;
    // Offline only when the browser says so: a server that does not answer
    // is not the reader's Wi-Fi.
    const state = !navigator.onLine
      ? "offline"
      : this.#attempt > UNREACHABLE_AFTER_ATTEMPTS ? "unreachable" : "reconnecting";
    this.#setState(state, { retryAt: Date.now() + delay });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      this.#setState(this.#state, { retryAt: null }); // trying now
      this.#connect();
    }, delay);
  }
}

/** Who is online: the server always sends the whole list. */
function renderPresence(list, users) {
  list.replaceChildren(...users.map((user) => {
    const li = document.createElement("li");
    li.dataset.userId = user.id;
    li.textContent = user.username;
    li.title = user.username; // cut short with an ellipsis when long
    return li;
  }));
}

function main() {
  const root = document.getElementById("room");
  // An older page (?before=SEQ) is for reading: plain links, no live socket.
  if (!root || root.dataset.archive) return;

  const config = JSON.parse(root.dataset.config);
  const { userId, username } = root.dataset;
  const stateBadge = document.getElementById("connection-state");
  const notice = document.getElementById("notice");
  const form = document.getElementById("composer");
  const input = document.getElementById("body");
  const presence = document.getElementById("presence");

  const messages = new MessageList(
    document.getElementById("messages"),
    document.getElementById("empty"),
    document.getElementById("message-template"),
    parseInt(root.dataset.lastSeq, 10) || 0,
    userId,
    config.groupWithinSeconds * 1000,
    root.dataset.moderator === "true",
  );
  const outbox = new Outbox((clientId, body) => connection.send({ type: "send", client_id: clientId, body }));

  // The connection's state, where nobody can miss it: the banner in the dock
  // (fixed to the viewport) for anything but connected, and the small badge
  // in the room header.
  const banner = document.getElementById("banner");
  const bannerText = document.getElementById("banner-text");
  const bannerWhen = document.getElementById("banner-when");
  const reconnectButton = document.getElementById("reconnect-now");
  const signInLink = document.getElementById("sign-in-again");
  const presenceBox = document.getElementById("presence-box");
  const presenceStale = document.getElementById("presence-stale");
  const BADGE_TEXT = {
    connecting: "connecting",
    connected: "connected",
    reconnecting: "reconnecting",
    unreachable: "unreachable",
    offline: "offline",
    "session-ended": "signed out",
    removed: "no access",
  };
  let countdown = null;

  function bannerMessage(state) {
    switch (state) {
      case "reconnecting":
        return "Connection lost. Messages you write are kept and sent once it is back.";
      case "unreachable":
        return "Can't reach the server. Messages you write are kept and sent once it answers again.";
      case "offline":
        return "You are offline. Messages you write are kept and sent once the connection is back.";
      case "session-ended":
        return "Your session has ended, so nothing more can be sent from this page. What you wrote is kept: sign in again to send it.";
      case "removed":
        return "You are no longer a member of this room, or it no longer exists.";
      default:
        return "";
    }
  }

  function showState(state, { retryAt = null } = {}) {
    stateBadge.textContent = BADGE_TEXT[state] ?? state;
    stateBadge.className = `state state-${state}`;
    root.dataset.state = state;
    const live = state === "connected";
    // The first attempt of a page load is quick: no banner unless it fails.
    banner.hidden = live || state === "connecting";
    banner.dataset.state = state;
    clearInterval(countdown);
    bannerText.textContent = bannerMessage(state);
    const retrying = RETRYING_STATES.has(state);
    const paintWhen = () => {
      const inSeconds = retryAt ? Math.max(1, Math.ceil((retryAt - Date.now()) / 1000)) : 0;
      bannerWhen.textContent = !retrying ? "" : inSeconds ? `Trying again in ${inSeconds} s.` : "Trying now…";
    };
    paintWhen();
    if (retryAt) countdown = setInterval(paintWhen, 1000);
    reconnectButton.hidden = !retrying;
    signInLink.hidden = state !== "session-ended";
    if (state === "removed") {
      const rooms = document.createElement("a");
      rooms.href = "/rooms";
      rooms.textContent = "See all rooms";
      bannerText.append(" ", rooms);
    }
    // Who is online is only known while connected; hello brings a fresh list.
    presenceBox.toggleAttribute("data-stale", !live && state !== "connecting");
    presenceStale.hidden = !presenceBox.hasAttribute("data-stale");
    if (state === "session-ended" || state === "removed") endOfPage(state);
    else messages.setPendingStatus(live || state === "connecting" ? SENDING : WAITING);
  }

  reconnectButton.addEventListener("click", () => connection.reconnectNow());

  // New messages of others, read out one by one by a polite live region.
  const announcer = document.getElementById("announcer");
  function announce(text) {
    const line = document.createElement("p");
    line.textContent = text.length > ANNOUNCE_MAX_CHARS ? `${text.slice(0, ANNOUNCE_MAX_CHARS)}…` : text;
    announcer.append(line);
    while (announcer.childElementCount > ANNOUNCE_KEEP) announcer.firstElementChild.remove();
  }

  // Renamed, or given a topic, by its owner or a moderator.
  function showRoom(room) {
    const name = document.getElementById("room-name");
    const topic = document.getElementById("topic");
    if (name && room.name && root.dataset.kind !== "direct") {
      name.textContent = room.name;
      document.title = `${room.name} · chat`;
    }
    if (topic) {
      topic.textContent = room.topic || "";
      topic.hidden = !room.topic;
    }
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  const revisions = new RevisionCursor(parseInt(root.dataset.lastRev, 10) || 0);

  const roomPath = `/rooms/${encodeURIComponent(root.dataset.roomId)}`;
  const connection = new RoomConnection({
    url: () => {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      return `${scheme}//${location.host}${roomPath}/ws?since=${messages.lastSeq}&rev=${revisions.cursor}`;
    },
    accessUrl: `${roomPath}/access`,
    sessionEndedCode: config.close.sessionEnded,
    removedCode: config.close.removed,
    onFrame,
    onState: showState,
  });

  // Scroll-back: "Older messages" at the top loads the page before the
  // oldest one shown, over the socket, when it comes into view or is
  // clicked; without JavaScript (or while disconnected) it is a plain link
  // to /rooms/{id}?before=SEQ.
  const olderLink = document.getElementById("older");
  let fetchingOlder = false;

  function fetchOlder() {
    if (fetchingOlder || olderLink.hidden || messages.firstSeq === undefined) return false;
    fetchingOlder = connection.send({
      type: "fetch",
      before: messages.firstSeq,
      limit: config.fetchLimit,
      client_id: `${OLDER_ID_PREFIX}${messages.firstSeq}`,
    });
    return fetchingOlder;
  }

  function addOlder(frame) {
    fetchingOlder = false;
    // Keep what the reader is looking at in place while the page grows above it.
    const fromBottom = document.documentElement.scrollHeight - window.scrollY;
    for (const message of frame.messages) messages.add(message);
    window.scrollTo(0, document.documentElement.scrollHeight - fromBottom);
    if (frame.has_more && messages.firstSeq !== undefined) {
      olderLink.href = `/rooms/${encodeURIComponent(root.dataset.roomId)}?before=${messages.firstSeq}`;
    } else {
      olderLink.hidden = true;
      olderLink.removeAttribute("href");
    }
  }

  olderLink.addEventListener("click", (event) => {
    if (fetchOlder()) event.preventDefault();
  });
  // In view at load (a short page), the link may be seen before the socket
  // is up: hello tries again.
  let olderInView = false;
  new IntersectionObserver((entries) => {
    olderInView = entries.some((entry) => entry.isIntersecting);
    if (olderInView) fetchOlder();
  }).observe(olderLink);

  // Who else is typing: user id -> {username, timer}. A notice shows them
  // for a few seconds; their message, or silence, takes them away.
  const typingLine = document.getElementById("typing");
  const typists = new Map();

  function renderTyping() {
    const names = [...typists.values()].map((typist) => typist.username);
    typingLine.textContent =
      names.length === 0 ? ""
        : names.length === 1 ? `${names[0]} is typing…`
          : names.length === 2 ? `${names[0]} and ${names[1]} are typing…`
            : "Several people are typing…";
  }

  function stoppedTyping(id) {
    const typist = typists.get(id);
    if (!typist) return;
    clearTimeout(typist.timer);
    typists.delete(id);
    renderTyping();
  }

  function startedTyping(user) {
    if (user.id === userId) return; // the server never sends these; belt and braces
    clearTimeout(typists.get(user.id)?.timer);
    typists.set(user.id, {
      username: user.username,
      timer: setTimeout(() => stoppedTyping(user.id), TYPING_SHOWN_FOR_MS),
    });
    renderTyping();
  }

  // The box grows with what is in it (a long paste, several lines), up to
  // its CSS max-height, then scrolls; emptied, it is two lines again.
  function fitComposer() {
    input.style.height = "auto";
    const border = input.offsetHeight - input.clientHeight;
    input.style.height = `${input.scrollHeight + border}px`;
  }
  input.addEventListener("input", fitComposer);
  // The "too long" notice goes once the text fits.
  let tooLongSaid = false;
  input.addEventListener("input", () => {
    if (tooLongSaid && [...input.value.trim()].length <= config.maxBodyLength) {
      tooLongSaid = false;
      showNotice("");
    }
  });

  let typingSentAt = 0;
  input.addEventListener("input", () => {
    const now = Date.now();
    if (!input.value.trim() || now - typingSentAt < TYPING_SEND_EVERY_MS) return;
    if (connection.send({ type: "typing" })) typingSentAt = now;
  });

  function addStored(list) {
    const stick = nearBottom();
    let added = false;
    for (const message of list) {
      if (messages.has(message.seq)) continue;
      // Our own message, stored: its pending copy gives way to it.
      stoppedTyping(message.user_id);
      const mine = message.user_id === userId ? outbox.take(message.client_id) : undefined;
      if (mine) messages.removePending(mine.element);
      added = messages.add(message) || added;
    }
    // Scroll once per frame, not per message: each check forces a layout.
    if (added && stick) scrollToBottom();
    if (added) markRead();
  }

  // The read marker (unread counts, chat/services/unread.py): moved when the
  // newest messages are on screen in a visible tab, never back, never twice.
  let readSent = 0;
  function markRead() {
    if (document.hidden || !nearBottom()) return;
    const seq = messages.lastSeq;
    if (seq > readSent && connection.send({ type: "read", seq })) readSent = seq;
  }

  let readCheck = null;
  window.addEventListener("scroll", () => {
    clearTimeout(readCheck);
    readCheck = setTimeout(markRead, 200);
  }, { passive: true });
  document.addEventListener("visibilitychange", markRead);

  // The server answers a resume from too far back with `reset`: the page
  // reloads to show the latest messages, and what was not yet sent (the
  // composer's text too) is carried over in sessionStorage, to be sent again
  // with the same client_ids, which the server never stores twice.
  // Per reader, so someone else signing in on this tab is never sent another's words.
  const carryKey = `chat:unsent:${userId}:${root.dataset.roomId}`;

  function keepUnsent() {
    const unsent = outbox.unsent();
    if (unsent.length || input.value) {
      sessionStorage.setItem(carryKey, JSON.stringify({ unsent, draft: input.value }));
    } else {
      sessionStorage.removeItem(carryKey);
    }
  }

  function reloadKeepingUnsent() {
    connection.stop();
    keepUnsent();
    location.reload();
  }

  // The page can send nothing more (signed out, or no longer in the room).
  // Signed out: what was not sent is kept (for this reader, in this tab) and
  // sent when they sign in again and come back here, which the banner's
  // link does; the text being typed is kept likewise.
  let ended = false;
  function endOfPage(state) {
    if (ended) return;
    ended = true;
    const why = state === "session-ended" ? SESSION_ENDED_REASON : "you are no longer in this room";
    for (const [clientId] of outbox.unsent()) {
      const entry = state === "session-ended" ? outbox.peek(clientId) : outbox.take(clientId);
      if (entry) messages.markFailed(entry.element, why, false);
    }
    if (state === "session-ended") {
      keepUnsent();
      signedOutEverywhere();
    }
  }

  // The top bar said "Signed in as …" after signing out in another tab.
  function signedOutEverywhere() {
    const whoami = document.querySelector(".whoami");
    if (whoami) whoami.textContent = "Signed out";
    const signOut = document.querySelector("form[action='/logout']");
    if (signOut) signOut.hidden = true;
  }

  // Leaving the page (a reload, another room, signing in again) keeps what
  // was not sent yet and the text in the box; coming back sends and restores them.
  window.addEventListener("pagehide", keepUnsent);

  function restoreUnsent() {
    const carried = sessionStorage.getItem(carryKey);
    if (!carried) return;
    sessionStorage.removeItem(carryKey);
    let saved;
    try {
      saved = JSON.parse(carried);
    } catch {
      return;
    }
    for (const [clientId, body] of saved.unsent || []) {
      outbox.add(clientId, body, messages.addPending({ client_id: clientId, username, body }));
    }
    if (saved.draft && !input.value) {
      input.value = saved.draft;
      fitComposer();
    }
  }

  function onError(frame) {
    if (frame.client_id?.startsWith(REVISION_ID_PREFIX)) {
      showNotice(frame.message); // the message stays as it was; the reader may try again
      return;
    }
    if (frame.client_id?.startsWith(OLDER_ID_PREFIX)) {
      // Scroll-back refused (too fast, or storage busy): try again in a while.
      fetchingOlder = false;
      if (RETRYABLE_ERRORS.has(frame.code)) setTimeout(fetchOlder, retryDelayMs(frame));
      return;
    }
    // Refused for good (the session ended, or no longer a member): a close
    // follows whose banner says it; the same words twice is one too many.
    if (frame.code === "forbidden" && !frame.client_id) return;
    showNotice(frame.message);
    if (!frame.client_id) return;
    if (RETRYABLE_ERRORS.has(frame.code)) {
      outbox.retryFrom(frame.client_id, retryDelayMs(frame));
      return;
    }
    const refused = outbox.take(frame.client_id);
    if (refused) {
      failed.set(frame.client_id, refused);
      messages.markFailed(refused.element, frame.message);
      announce(`Message not sent: ${frame.message}`);
    }
  }

  // Refused messages, kept for Retry (same client_id: never stored twice) or Discard.
  const failed = new Map(); // client_id -> {body, element}

  function onFrame(frame) {
    switch (frame.type) {
      case "hello":
        root.dataset.instance = frame.instance; // which process serves us (handy when debugging)
        showNotice("");
        outbox.restart();
        fetchingOlder = false; // an answer lost with the last socket is not waited for
        if (olderInView) fetchOlder();
        break;
      case "history":
        if (frame.reset) {
          reloadKeepingUnsent();
          return;
        }
        if (frame.before !== undefined) addOlder(frame); // the answer to a fetch
        else {
          addStored(frame.messages);
          markRead();
        }
        break;
      case "message":
        if (frame.message.user_id !== userId && !messages.has(frame.message.seq)) {
          announce(`${frame.message.username}: ${frame.message.deleted_at ? "message deleted" : frame.message.body}`);
        }
        addStored([frame.message]);
        break;
      case "ack":
        showNotice(""); // a "slow down" before it is over
        addStored([frame.message]);
        break;
      case "message_updated":
        messages.update(frame.message);
        revisions.seen(frame.message.rev);
        break;
      case "updates":
        for (const message of frame.messages) messages.update(message);
        revisions.caughtUp(frame.last_rev);
        break;
      case "room_updated":
        showRoom(frame.room);
        break;
      case "membership": {
        const said = { joined: "joined the room", left: "left the room", removed: "was removed", banned: "was banned" };
        if (said[frame.change]) messages.addNote(`${frame.user.username} ${said[frame.change]}`);
        break;
      }
      case "presence":
        renderPresence(presence, frame.users);
        break;
      case "typing":
        startedTyping(frame.user);
        break;
      case "error":
        onError(frame);
        break;
    }
  }

  // Edit and Delete, on the reader's own messages.
  function revise(frame) {
    if (!connection.send({ ...frame, client_id: `${REVISION_ID_PREFIX}${newClientId()}` })) {
      showNotice("Not connected: try again once the connection is back.");
    }
  }

  function startEditing(li) {
    const seq = Number(li.dataset.seq);
    const source = messages.sourceOf(seq);
    if (source === undefined || li.querySelector("form.edit")) return;
    const editor = document.createElement("form");
    editor.className = "edit";
    const box = document.createElement("textarea");
    box.value = source;
    box.maxLength = config.maxBodyLength;
    box.rows = Math.min(8, source.split("\n").length + 1);
    box.setAttribute("aria-label", "Edit message");
    const save = document.createElement("button");
    save.type = "submit";
    save.textContent = "Save";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "link";
    cancel.textContent = "Cancel";
    editor.append(box, save, cancel);
    li.classList.add("editing");
    li.append(editor);
    box.focus();

    function close() {
      editor.remove();
      li.classList.remove("editing");
      li.querySelector('[data-action="edit"]').focus();
    }
    editor.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = box.value.trim();
      if (!body) return;
      if (body !== source) revise({ type: "edit", id: li.dataset.id, body });
      close();
    });
    cancel.addEventListener("click", close);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") close();
      else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        editor.requestSubmit();
      }
    });
  }

  document.getElementById("messages").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    const refused = button?.closest("li.message.failed");
    if (refused && failed.has(refused.dataset.clientId)) {
      const clientId = refused.dataset.clientId;
      const { body } = failed.get(clientId);
      failed.delete(clientId);
      if (button.dataset.action === "retry") {
        messages.retry(refused, connection.state === "connected" ? SENDING : WAITING);
        outbox.add(clientId, body, refused);
      } else {
        messages.discard(refused);
        input.focus();
      }
      return;
    }
    const li = button?.closest("li.message[data-id]");
    if (!li) return;
    if (button.dataset.action === "edit") startEditing(li);
    else if (button.dataset.action === "delete" && confirm("Delete this message for everyone?")) {
      revise({ type: "delete", id: li.dataset.id });
    }
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    if (connection.state === "removed") {
      showNotice("You are no longer in this room: nothing can be sent here.");
      return;
    }
    const length = [...body].length;
    if (length > config.maxBodyLength) {
      // static/forms.js counts under the box; Enter must also say what to do.
      const over = (length - config.maxBodyLength).toLocaleString();
      showNotice(
        `This message is ${over} characters too long to send (the limit is ${config.maxBodyLength.toLocaleString()}): ` +
          "split it into shorter messages.",
      );
      tooLongSaid = true;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    const clientId = newClientId();
    const element = messages.addPending(
      { client_id: clientId, username, body },
      connection.state === "connected" ? SENDING : WAITING,
    );
    input.value = "";
    input.dispatchEvent(new Event("input")); // the counter follows
    typingSentAt = 0; // the next keystroke starts a new message: say so at once
    outbox.add(clientId, body, element);
    if (ended) messages.markFailed(element, SESSION_ENDED_REASON, false); // kept, and sent after signing in
    scrollToBottom();
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  // Try again at once when there is reason to think it would work: the
  // network is back, the tab is looked at again, or the page came back from
  // the back-forward cache (its socket was closed on the way in).
  window.addEventListener("online", () => connection.reconnectNow());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) connection.reconnectNow();
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) connection.reconnectNow();
  });

  keepClearOfDock(document.querySelector(".dock"));
  keyboardList(document.getElementById("messages"));
  messages.localizeTimes();
  restoreUnsent();
  scrollToBottom();
  // Ready to type; not on touch screens, where focus would pop a keyboard over the room.
  if (!matchMedia("(pointer: coarse)").matches) input.focus({ preventScroll: true });
  connection.start();
}

main();
