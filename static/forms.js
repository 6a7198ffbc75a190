// Text fields that count instead of cutting. A field with data-max-length
// shows how many characters it holds once it is near its limit, and past the
// limit says by how much and is marked invalid (aria-invalid), instead of the
// browser silently cutting a long paste (maxlength). The server refuses
// anything over the limit with its own message, so this only tells earlier.
//
// Characters are counted as the server counts them: code points, not UTF-16
// units, so an emoji is one.

const NEAR_LIMIT = 0.8;

function characterCount(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

let generated = 0;

// The element that shows the count: #<id>-count when the page has one,
// else one made next to the field and tied to it with aria-describedby.
function counterFor(field) {
  if (!field.id) field.id = `counted-${++generated}`;
  let counter = document.getElementById(`${field.id}-count`);
  if (!counter) {
    counter = document.createElement("span");
    counter.id = `${field.id}-count`;
    counter.className = "counter";
    counter.hidden = true;
    field.after(counter);
    const described = field.getAttribute("aria-describedby");
    field.setAttribute("aria-describedby", described ? `${described} ${counter.id}` : counter.id);
  }
  return counter;
}

/** Redraw ``field``'s counter; true when the text is over its limit. */
function updateCounter(field) {
  const max = Number(field.dataset.maxLength);
  if (!max) return false;
  const counter = counterFor(field);
  const count = characterCount(field.value);
  const over = count > max;
  counter.hidden = count < max * NEAR_LIMIT;
  counter.classList.toggle("over", over);
  counter.textContent = over
    ? `${(count - max).toLocaleString()} ${count - max === 1 ? "character" : "characters"} too many (the limit is ${max.toLocaleString()})`
    : `${count.toLocaleString()} / ${max.toLocaleString()}`;
  // A field the server marked invalid stays so until its text changes.
  if (over) field.setAttribute("aria-invalid", "true");
  else if (field.dataset.counterMarked) field.removeAttribute("aria-invalid");
  if (over) field.dataset.counterMarked = "true";
  else delete field.dataset.counterMarked;
  return over;
}

for (const field of document.querySelectorAll("input[data-max-length], textarea[data-max-length]")) {
  field.addEventListener("input", () => updateCounter(field));
  updateCounter(field);
}
