// The coordinator's rule for JSON numbers, for code that parses JSON text
// before the coordinator sees it (the Express middleware).
//
// Canonical JSON (RFC 8785) holds a number as the nearest IEEE 754 double,
// written as JavaScript's String(number) writes it, so 1234567890123456789
// and 1234567890123456788 would both become 1234567890123456800 and share a
// fingerprint. The coordinator therefore refuses a number unless its
// canonical form is the same decimal number: 1, 1.0 and 1e0 are one number
// and pass, as do 0.1, 9007199254740992 and 1e21; 1234567890123456789 and
// 0.10000000000000000001 are refused. The vectors in
// testdata/fingerprints.json hold every implementation to it.
//
// What this module can see: only JSON text. JSON.parse hands back doubles, so
// the literals are read from the text. A JavaScript value (the `json` option
// of Coordinator#run) needs no check: a Number is a double already, and
// JSON.stringify writes it in its canonical form, which the coordinator
// keeps. If a larger integer was merged into it, that happened earlier, in
// whatever parsed it (JSON.parse, express.json()): keep such ids as strings.
'use strict';

/**
 * The exact value of a JSON number literal as `digits` e `exponent`, with no
 * leading or trailing zeros in the digits ('0' for zero of either sign), so
 * that one number has one key whatever its spelling; null if not a number.
 */
function decimalValue(literal) {
  const parts = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  if (parts === null) return null;
  const [, sign, integer, fraction = '', exponent = '0'] = parts;
  const digits = (integer + fraction).replace(/^0+/, '');
  if (digits === '') return '0';
  const significant = digits.replace(/0+$/, '');
  // BigInt: an exponent may have more digits than a Number holds exactly.
  const scale = BigInt(exponent) - BigInt(fraction.length) + BigInt(digits.length - significant.length);
  return `${sign}${significant}e${scale}`;
}

/** True if canonical JSON writes the number `literal` as the same number. */
function keepsItsValue(literal) {
  const value = Number(literal); // correctly rounded, as JSON.parse does
  return Number.isFinite(value) && decimalValue(literal) !== null && decimalValue(literal) === decimalValue(String(value));
}

const escapeToken = (token) => String(token).replaceAll('~', '~0').replaceAll('/', '~1');

/**
 * The JSON Pointer of the first number in `text` (valid JSON: call it after
 * JSON.parse succeeded) that canonical JSON would change, or null. A loop,
 * not recursion: the text may nest as deeply as JSON.parse allows.
 */
function firstInexactNumber(text) {
  const path = []; // one token per open container: a member name or an index
  const containers = []; // '{' or '['
  let expectName = false;
  let at = 0;
  while (at < text.length) {
    const c = text[at];
    if (c === '"') {
      const start = at++;
      while (text[at] !== '"') at += text[at] === '\\' ? 2 : 1;
      at++;
      if (expectName) {
        path[path.length - 1] = JSON.parse(text.slice(start, at));
        expectName = false;
      }
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      const start = at;
      while (at < text.length && '0123456789+-.eE'.includes(text[at])) at++;
      if (!keepsItsValue(text.slice(start, at))) return path.map((t) => `/${escapeToken(t)}`).join('');
    } else {
      if (c === '{' || c === '[') {
        containers.push(c);
        path.push(c === '[' ? 0 : '');
        expectName = c === '{';
      } else if (c === '}' || c === ']') {
        containers.pop();
        path.pop();
        expectName = false; // after an empty object
      } else if (c === ',') {
        if (containers[containers.length - 1] === '[') path[path.length - 1]++;
        else expectName = true;
      }
      at++;
    }
  }
  return null;
}

module.exports = { firstInexactNumber, keepsItsValue };
