// The sidebar of every signed-in page: the reader's rooms and DMs with live
// unread and mention badges (protocol: docs/protocol.md, "The event stream").
//
// The server renders the list and its counts; this keeps them current over
// /events/ws, which carries counts and markers, never message bodies: a
// message stored in one of the reader's rooms ("activity"), their read
// marker moving in any tab ("read"), or a new list when they join or leave a
// room ("badges"). It also filters the list as the reader types, puts the
// total unread in the tab's title, and, once the reader has allowed it with a
// click, raises a desktop notification for a mention or a DM while the page
// is hidden.

const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30000;

const sidebar = document.getElementById("sidebar");
const pageTitle = document.title;
const currentRoom = document.querySelector("#room")?.dataset.roomId;

function rows() {
  return [...sidebar.querySelectorAll("li[data-room-id]")];
}

function rowOf(roomId) {
  return sidebar.querySelector(`li[data-room-id="${CSS.escape(roomId)}"]`);
}

// Redraw one row's badges from its data attributes.
function paint(li) {
  const unread = Math.max(0, Number(li.dataset.lastSeq) - Number(li.dataset.readSeq));
  const mentions = Number(li.dataset.mentions);
  paintBadge(li.querySelector(".unread"), unread, String(unread), "unread");
  paintBadge(li.querySelector(".mentions"), mentions, `@${mentions}`, mentions === 1 ? "mention" : "mentions");
  li.classList.toggle("unread-some", unread > 0);
}

// A badge shows its number; a screen reader hears what it counts, in the
// link's name ("general, 3 unread"): an aria-label on the badge replaced the
// number with the bare word. The same markup as templates/_sidebar.html.
function paintBadge(badge, count, shown, said) {
  const visible = document.createElement("span");
  visible.setAttribute("aria-hidden", "true");
  visible.textContent = shown;
  const words = document.createElement("span");
  words.className = "visually-hidden";
  words.textContent = `, ${count} ${said}`;
  badge.replaceChildren(visible, words);
  badge.hidden = count === 0;
}

function paintTitle() {
  const total = rows().reduce(
    (sum, li) => sum + Math.max(0, Number(li.dataset.lastSeq) - Number(li.dataset.readSeq)),
    0,
  );
  document.title = total > 0 ? `(${total}) ${pageTitle}` : pageTitle;
  toggle.textContent = total > 0 ? `Your rooms (${total})` : "Your rooms";
}

// On narrow screens the list is a panel that the "Your rooms" button in the
// top bar opens over the page (chat.css); without this script it simply
// stays above the page.
const toggle = document.getElementById("sidebar-toggle");
document.body.classList.add("sidebar-collapsible");

function setOpen(open) {
  document.body.classList.toggle("sidebar-open", open);
  toggle.setAttribute("aria-expanded", String(open));
}

toggle.addEventListener("click", () => {
  const open = !document.body.classList.contains("sidebar-open");
  setOpen(open);
  if (open) switcher.focus();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("sidebar-open")) {
    setOpen(false);
    toggle.focus();
  }
});

// A private room's mark, as templates/_lock_icon.html draws it (a constant: no data in it).
const LOCK_ICON =
  '<svg class="icon" viewBox="0 0 16 16" width="12" height="12" aria-hidden="true" focusable="false">' +
  '<path d="M5 7V5a3 3 0 0 1 6 0v2" fill="none" stroke="currentColor" stroke-width="1.6"/>' +
  '<rect x="3" y="7" width="10" height="7" rx="1.5" fill="currentColor"/></svg>' +
  '<span class="visually-hidden">private: </span>';

// The rooms the list showed last, to say which ones are new (an invitation
// arrived unannounced). Rows the server rendered count as known.
const known = new Set(rows().map((li) => li.dataset.roomId));
const news = document.createElement("p");
news.className = "visually-hidden";
news.setAttribute("aria-live", "polite");
sidebar.append(news);

// A whole new list (the reader joined or left a room, or was invited).
function renderBadges(rooms) {
  const added = rooms.filter((room) => !known.has(room.room_id));
  known.clear();
  for (const room of rooms) known.add(room.room_id);
  for (const list of sidebar.querySelectorAll("ul.conversations")) {
    const kinds = list.dataset.kinds.split(" ");
    const mine = rooms.filter((room) => kinds.includes(room.kind));
    if (mine.length === 0) continue; // keep the "None yet" line the server wrote
    list.replaceChildren(...mine.map((room) => {
      const li = document.createElement("li");
      li.dataset.roomId = room.room_id;
      li.dataset.lastSeq = room.last_seq;
      li.dataset.readSeq = room.read_seq;
      li.dataset.mentions = room.mentions;
      li.dataset.kind = room.kind;
      const link = document.createElement("a");
      link.href = `/rooms/${encodeURIComponent(room.room_id)}`;
      if (room.room_id === currentRoom) link.setAttribute("aria-current", "page");
      const name = document.createElement("span");
      name.className = "name";
      name.title = room.title;
      if (room.kind === "private") name.insertAdjacentHTML("afterbegin", LOCK_ICON);
      name.append(room.title);
      const mentions = document.createElement("span");
      mentions.className = "mentions";
      const unread = document.createElement("span");
      unread.className = "unread";
      link.append(name, mentions, unread);
      if (added.includes(room)) {
        const mark = document.createElement("span");
        mark.className = "new-mark";
        mark.textContent = "new";
        link.append(mark);
      }
      li.append(link);
      paint(li);
      return li;
    }));
  }
  if (added.length) news.textContent = `New in your list: ${added.map((room) => room.title).join(", ")}.`;
  filter();
  paintTitle();
}

function notify(li, mention) {
  if (!("Notification" in window) || Notification.permission !== "granted" || !document.hidden) return;
  const name = li.querySelector(".name").title;
  const text = li.dataset.kind === "direct" ? `New message from ${name}` : `You were mentioned in ${name}`;
  if (mention || li.dataset.kind === "direct") {
    const note = new Notification(text, { tag: li.dataset.roomId });
    note.onclick = () => {
      window.focus();
      location.href = `/rooms/${encodeURIComponent(li.dataset.roomId)}`;
    };
  }
}

function onEvent(event) {
  const li = event.room_id ? rowOf(event.room_id) : null;
  switch (event.type) {
    case "badges":
      renderBadges(event.rooms);
      return;
    case "activity":
      if (!li) return;
      li.dataset.lastSeq = Math.max(Number(li.dataset.lastSeq), event.last_seq);
      // One's own message is read by writing it.
      if (event.mine) li.dataset.readSeq = Math.max(Number(li.dataset.readSeq), event.last_seq);
      else if (event.mention) li.dataset.mentions = Number(li.dataset.mentions) + 1;
      if (!event.mine) notify(li, event.mention);
      break;
    case "read":
      if (!li) return;
      li.dataset.readSeq = Math.max(Number(li.dataset.readSeq), event.read_seq);
      li.dataset.mentions = event.mentions;
      break;
    default:
      return;
  }
  paint(li);
  paintTitle();
}

// The event stream, reconnecting with jittered backoff; the server sends a
// fresh list on every connect, so nothing missed meanwhile stays wrong.
let attempt = 0;
function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/events/ws`);
  socket.onmessage = (message) => {
    attempt = 0;
    try {
      onEvent(JSON.parse(message.data));
    } catch {
      // not JSON: ignore
    }
  };
  socket.onclose = (event) => {
    if (event.code === 1008) return; // the session ended: the room page (or the next click) says so
    attempt += 1;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1));
    setTimeout(connect, Math.random() * ceiling);
  };
}

// Type to filter; Enter opens the first match.
const switcher = document.getElementById("switcher");
function filter() {
  const query = switcher.value.trim().toLowerCase();
  for (const li of rows()) {
    const name = li.querySelector(".name").title.toLowerCase();
    li.classList.toggle("filtered-out", query !== "" && !name.includes(query));
  }
}
switcher.addEventListener("input", filter);
switcher.addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  const first = rows().find((li) => !li.classList.contains("filtered-out"));
  if (first) location.href = first.querySelector("a").href;
});

// Desktop notifications: only ever asked for by a click.
const notifyButton = document.getElementById("notify");
if ("Notification" in window && Notification.permission === "default") {
  notifyButton.hidden = false;
  notifyButton.addEventListener("click", async () => {
    await Notification.requestPermission();
    notifyButton.hidden = Notification.permission !== "default";
  });
}

for (const li of rows()) paint(li);
paintTitle();
connect();
