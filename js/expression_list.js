// Lists typed into a text box (the Preset node's expressions, labels): the browser's half of split_list in
// models/expression/batch.py. Items are separated by commas, semicolons or new lines; each loses the whitespace
// Python's str.strip() removes; empty items are dropped. A test runs both on the same strings. No ComfyUI import:
// Node.js runs this file in CI.

const SEPARATORS = /[,;\n]/;
// What Python's str.isspace() calls whitespace: JavaScript's trim() differs on \x1c-\x1f, \x85 and \ufeff.
const SPACE = "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const EDGES = new RegExp(`^${SPACE}+|${SPACE}+$`, "g");

export function splitList(text) {
  return String(text).split(SEPARATORS).map((item) => item.replace(EDGES, "")).filter(Boolean);
}

// The list with `name` taken out where it is in it, else added at the end; written back as "a, b, c".
export function toggleItem(text, name) {
  const items = splitList(text);
  const at = items.indexOf(name);
  if (at >= 0) items.splice(at, 1);
  else items.push(name);
  return items.join(", ");
}
