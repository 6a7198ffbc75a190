// Times on every page in the reader's own time zone. The server writes them
// in UTC (a <time datetime="..." data-local> element); this rewrites each as
// a local date and time, with the full date on hover. The room's messages
// are chat.js's to draw.

for (const time of document.querySelectorAll("time[datetime][data-local]")) {
  const date = new Date(time.getAttribute("datetime"));
  if (isNaN(date)) continue;
  time.textContent = date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  time.title = date.toLocaleString([], { dateStyle: "full", timeStyle: "long" });
}
