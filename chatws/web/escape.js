// Showing text from the network safely, as the terminal client does.
//
// Control characters, invisible and format characters (Unicode category
// Cf), private-use (Co) and unassigned (Cn) code points, noncharacters and
// U+2028/U+2029 are replaced by escapes: \t, \n and \r for those three,
// \xNN for other characters below U+0080 and for bytes that are not valid
// UTF-8, \uNNNN up to U+FFFF and \UNNNNNNNN beyond, for the rest. Everything else,
// backslash included, is kept as it is. The page then sets the result with
// textContent, never as HTML.

const unsafe = /[\p{Cc}\p{Cf}\p{Co}\p{Cn}\u2028\u2029]/u;

function isNoncharacter(cp) {
  return (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe;
}

function hex(n, width) {
  return n.toString(16).padStart(width, "0");
}

// escapeCodePoint returns how the code point cp is shown.
function escapeCodePoint(cp) {
  const ch = String.fromCodePoint(cp);
  if (!unsafe.test(ch) && !isNoncharacter(cp)) {
    return ch;
  }
  switch (cp) {
    case 0x09: return "\\t";
    case 0x0a: return "\\n";
    case 0x0d: return "\\r";
  }
  if (cp < 0x80) return "\\x" + hex(cp, 2);
  return cp > 0xffff ? "\\U" + hex(cp, 8) : "\\u" + hex(cp, 4);
}

// escapeText returns the JavaScript string s made safe to show.
export function escapeText(s) {
  let out = "";
  for (const ch of s) {
    out += escapeCodePoint(ch.codePointAt(0));
  }
  return out;
}

// escapeBytes decodes the UTF-8 bytes b (a Uint8Array) and makes them safe
// to show: bytes that are not valid UTF-8 become \xNN.
export function escapeBytes(b) {
  let out = "";
  let i = 0;
  while (i < b.length) {
    const [cp, size] = decodeRune(b, i);
    out += cp < 0 ? "\\x" + hex(b[i], 2) : escapeCodePoint(cp);
    i += size;
  }
  return out;
}

// decodeRune decodes the UTF-8 sequence at b[i]: [code point, size], or
// [-1, 1] for an invalid byte (overlong forms, surrogates and values beyond
// U+10FFFF are invalid).
export function decodeRune(b, i) {
  const c0 = b[i];
  if (c0 < 0x80) return [c0, 1];
  let size, min, cp;
  if (c0 >= 0xc2 && c0 <= 0xdf) { size = 2; min = 0x80; cp = c0 & 0x1f; }
  else if (c0 >= 0xe0 && c0 <= 0xef) { size = 3; min = 0x800; cp = c0 & 0x0f; }
  else if (c0 >= 0xf0 && c0 <= 0xf4) { size = 4; min = 0x10000; cp = c0 & 0x07; }
  else return [-1, 1];
  if (i + size > b.length) return [-1, 1];
  for (let k = 1; k < size; k++) {
    const c = b[i + k];
    if ((c & 0xc0) !== 0x80) return [-1, 1];
    cp = (cp << 6) | (c & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return [-1, 1];
  return [cp, size];
}
