// Live room client: one WebSocket per room page (protocol: docs/protocol.md).
//
// The server renders the latest messages into the page; this script resumes
// from the last rendered seq, so nothing is shown twice. Every message lives
// in the DOM keyed by seq, inserted in seq order whatever order frames arrive
// in. Own messages show as pending until acked; unacked sends are re-sent on
// reconnect with their original client_id, which the server deduplicates.
(function () {
  "use strict";

  var root = document.getElementById("room");
  if (!root) return;

  var roomId = root.dataset.roomId;
  var list = document.getElementById("messages");
  var empty = document.getElementById("empty");
  var notice = document.getElementById("notice");
  var stateEl = document.getElementById("connection-state");
  var form = document.getElementById("composer");
  var presenceList = document.getElementById("presence");
  var input = document.getElementById("body");

  var lastSeq = parseInt(root.dataset.lastSeq, 10) || 0;
  var outbox = new Map(); // client_id -> {body, element}
  var socket = null;
  var attempt = 0;
  var reconnectTimer = null;
  var stopped = false;

  var BACKOFF_BASE_MS = 500;
  var BACKOFF_MAX_MS = 30000;
  var OFFLINE_AFTER_ATTEMPTS = 6;

  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  function setState(state) {
    stateEl.textContent = state;
    stateEl.className = "state state-" + state;
    root.dataset.state = state;
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function formatTime(iso) {
    var date = new Date(iso);
    return isNaN(date) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function renderMessage(msg, pending) {
    var li = document.createElement("li");
    li.className = "message" + (pending ? " pending" : "");
    if (msg.seq !== undefined) li.dataset.seq = msg.seq;
    if (msg.id) li.dataset.id = msg.id;
    li.dataset.clientId = msg.client_id;
    var author = document.createElement("span");
    author.className = "author";
    author.textContent = msg.username;
    var time = document.createElement("time");
    if (msg.created_at) {
      time.dateTime = msg.created_at;
      time.textContent = formatTime(msg.created_at);
    } else {
      time.textContent = "sending…";
    }
    var body = document.createElement("p");
    body.className = "body";
    body.textContent = msg.body; // text, never HTML
    li.append(author, time, body);
    return li;
  }

  function localizeRenderedTimes() {
    list.querySelectorAll("time[datetime]").forEach(function (el) {
      el.textContent = formatTime(el.getAttribute("datetime"));
    });
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.offsetHeight - 80;
  }

  // Insert a stored message at its seq position; ignore it if already shown.
  function addMessage(msg) {
    if (list.querySelector('li[data-seq="' + msg.seq + '"]')) return;
    var stick = nearBottom();
    var pending = outbox.get(msg.client_id);
    if (pending && msg.user_id === root.dataset.userId) {
      pending.element.remove();
      outbox.delete(msg.client_id);
    }
    var li = renderMessage(msg, false);
    var confirmed = list.querySelectorAll("li[data-seq]");
    var before = null;
    for (var i = confirmed.length - 1; i >= 0; i--) {
      if (parseInt(confirmed[i].dataset.seq, 10) < msg.seq) break;
      before = confirmed[i];
    }
    if (before) {
      list.insertBefore(li, before);
    } else {
      // After the last confirmed message, before any pending ones.
      var firstPending = list.querySelector("li.pending");
      list.insertBefore(li, firstPending);
    }
    if (msg.seq > lastSeq) lastSeq = msg.seq;
    empty.hidden = true;
    if (stick) window.scrollTo(0, document.body.scrollHeight);
  }

  function send(clientId) {
    var entry = outbox.get(clientId);
    if (!entry || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "send", client_id: clientId, body: entry.body }));
  }

  function markFailed(clientId, reason) {
    var entry = outbox.get(clientId);
    if (!entry) return;
    outbox.delete(clientId);
    entry.element.classList.remove("pending");
    entry.element.classList.add("failed");
    entry.element.title = reason;
  }

  function showPresence(users) {
    presenceList.replaceChildren.apply(presenceList, users.map(function (user) {
      var li = document.createElement("li");
      li.dataset.userId = user.id;
      li.textContent = user.username;
      return li;
    }));
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "presence":
        showPresence(frame.users);
        break;
      case "hello":
        attempt = 0;
        root.dataset.instance = frame.instance; // which process serves us (handy when debugging)
        setState("connected");
        showNotice("");
        outbox.forEach(function (_, clientId) { send(clientId); });
        break;
      case "history":
        frame.messages.forEach(addMessage);
        break;
      case "message":
        addMessage(frame.message);
        break;
      case "ack":
        addMessage(frame.message);
        break;
      case "error":
        if (frame.code === "rate_limited" || frame.code === "unavailable") {
          showNotice(frame.message);
          if (frame.client_id) {
            setTimeout(function () { send(frame.client_id); }, 2000 + Math.random() * 1000);
          }
        } else if (frame.client_id) {
          markFailed(frame.client_id, frame.message);
          showNotice(frame.message);
        } else {
          showNotice(frame.message);
        }
        break;
    }
  }

  function scheduleReconnect() {
    if (stopped || reconnectTimer) return;
    attempt += 1;
    setState(attempt > OFFLINE_AFTER_ATTEMPTS || !navigator.onLine ? "offline" : "reconnecting");
    // Exponential backoff with full jitter, so a restarted server is not hit
    // by every client at the same instant.
    var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, attempt - 1));
    var delay = Math.random() * ceiling;
    reconnectTimer = setTimeout(function () {
      reconnectTimer = null;
      connect();
    }, delay);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + location.host + "/rooms/" + encodeURIComponent(roomId) + "/ws?since=" + lastSeq;
    socket = new WebSocket(url);
    socket.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      onFrame(frame);
    };
    socket.onclose = function (event) {
      socket = null;
      if (event.code === 1008) {
        stopped = true;
        setState("offline");
        showNotice("Your session has ended. Sign in again to keep chatting.");
        return;
      }
      scheduleReconnect();
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = input.value.trim();
    if (!body) return;
    var clientId = newClientId();
    var element = renderMessage({ client_id: clientId, username: root.dataset.username, body: body }, true);
    list.appendChild(element);
    empty.hidden = true;
    outbox.set(clientId, { body: body, element: element });
    input.value = "";
    send(clientId);
    window.scrollTo(0, document.body.scrollHeight);
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  window.addEventListener("online", function () {
    if (!socket && !stopped) {
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
      attempt = 0;
      connect();
    }
  });

  localizeRenderedTimes();
  window.scrollTo(0, document.body.scrollHeight);
  setState("reconnecting");
  connect();
})();
