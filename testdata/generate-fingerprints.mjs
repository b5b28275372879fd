// Generates fingerprints.json: golden fingerprint vectors that the Rust,
// Python and Node tests all read. The canonical forms come from this
// independent RFC 8785 implementation (JSON.stringify for primitives, which
// RFC 8785 adopts, and JavaScript's UTF-16 key order), not from the Rust code
// under test. Run: node testdata/generate-fingerprints.mjs > testdata/fingerprints.json
import { createHash } from 'node:crypto';

function canonical(value) {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return '[' + value.map(canonical).join(',') + ']';
  return '{' + Object.keys(value).sort().map((k) => JSON.stringify(k) + ':' + canonical(value[k])).join(',') + '}';
}

function removePointer(doc, pointer) {
  const tokens = pointer.slice(1).split('/').map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
  const last = tokens.pop();
  let target = doc;
  for (const t of tokens) {
    if (target === null || typeof target !== 'object' || !(t in target)) return;
    target = target[t];
  }
  if (Array.isArray(target)) {
    if (/^(0|[1-9][0-9]*)$/.test(last) && Number(last) < target.length) target.splice(Number(last), 1);
  } else if (target !== null && typeof target === 'object') {
    delete target[last];
  }
}

const cases = [
  { name: 'raw bytes', payload: 'amount=100&currency=EUR', canonicalization: 'RAW' },
  { name: 'raw empty payload', payload: '', canonicalization: 'RAW' },
  { name: 'json member order', payload: '{"b":1,"a":true}', canonicalization: 'JSON' },
  { name: 'json whitespace (same digest as member order)', payload: '{ "a": true,\n\t"b": 1 }', canonicalization: 'JSON' },
  { name: 'json unicode escapes and key order', payload: '{"\\u00e9":1,"\\ud83d\\ude00":2,"\\ufb01":3,"z":"\\u0041\\u00e9"}', canonicalization: 'JSON' },
  { name: 'json number forms', payload: '[1.0, 1e21, 1e20, 1e-7, 0.000001, -0, 0.1, 4.50, 1.2345678901234569e23, 9007199254740992]', canonicalization: 'JSON' },
  // One number in any spelling is one number: these three share a digest.
  { name: 'json number 1', payload: '{"n":1}', canonicalization: 'JSON' },
  { name: 'json number 1.0 (same digest as 1)', payload: '{"n":1.0}', canonicalization: 'JSON' },
  { name: 'json number 1e0 (same digest as 1)', payload: '{"n":1e0}', canonicalization: 'JSON' },
  { name: 'json numbers -0 and 0', payload: '[-0, 0, -0.0, 0e5]', canonicalization: 'JSON' },
  // Large numbers that are their own canonical form are kept.
  { name: 'json large numbers a double holds as written', payload: '{"max_safe":9007199254740991,"two_to_53":9007199254740992,"e21":1e21,"written_as_js_writes_2_to_60":1152921504606847000,"max":1.7976931348623157e308,"min":5e-324,"tenth":0.1}', canonicalization: 'JSON' },
  { name: 'json nested arrays and objects', payload: '[[[]],[{"z":1,"y":[2,1]}],{"b":{"d":null,"c":[]}}]', canonicalization: 'JSON' },
  { name: 'json string escapes', payload: '"line\\nbreak\\ttab \\"quote\\" back\\\\slash \\u001f \\u007f \\/"', canonicalization: 'JSON' },
  { name: 'json ignored volatile fields', payload: '{"amount":100,"timestamp":"2026-11-22T10:00:00Z","meta":{"trace":"abc","region":"eu"}}', canonicalization: 'JSON', ignore_fields: ['/timestamp', '/meta/trace'] },
  { name: 'json ignored fields that are absent', payload: '{"amount":100}', canonicalization: 'JSON', ignore_fields: ['/timestamp', '/x/y'] },
  { name: 'json escaped pointer tokens and array index', payload: '{"a/b":1,"m~n":2,"items":[{"id":1,"at":5},{"id":2,"at":6}]}', canonicalization: 'JSON', ignore_fields: ['/a~1b', '/m~0n', '/items/1/at'] },
];

// Payloads every implementation refuses (INVALID_ARGUMENT at the gRPC edge,
// 400 at the HTTP edge), naming the first such number in document order by
// its JSON Pointer. Each has a twin, a different number that the same
// canonical form would stand for: accepting both would give two requests one
// fingerprint. The rule (see src/core/canonical_json.rs): a number is kept
// only if its canonical form, JavaScript's String(Number(literal)), is the
// same decimal number as the literal; this script checks that each twin
// collides, not the rule itself.
const refusedCases = [
  { name: 'issue 26: an account id a double cannot hold', payload: '{"account_id":1234567890123456789}', twin: '{"account_id":1234567890123456788}', pointer: '/account_id' },
  { name: 'issue 26: the other account id', payload: '{"account_id":1234567890123456788}', twin: '{"account_id":1234567890123456800}', pointer: '/account_id' },
  { name: '2^53 + 1', payload: '[9007199254740993]', twin: '[9007199254740992]', pointer: '/0' },
  { name: '2^60 is a double, but written 1152921504606847000', payload: '{"id":1152921504606846976}', twin: '{"id":1152921504606847000}', pointer: '/id' },
  { name: 'more digits than the double has', payload: '{"price":0.10000000000000000001}', twin: '{"price":0.1}', pointer: '/price' },
  { name: 'the RFC 8785 example number', payload: '333333333.33333329', twin: '333333333.3333333', pointer: '' },
  { name: 'too small for a double', payload: '{"tiny":1e-400}', twin: '{"tiny":0}', pointer: '/tiny' },
  { name: 'a large integer', payload: '[123456789012345678901234]', twin: '[1.2345678901234569e23]', pointer: '/0' },
  { name: 'escaped pointer tokens and an array index', payload: '{"a/b":{"m~n":[1,{"id":-12345678901234567891}]}}', twin: '{"a/b":{"m~n":[1,{"id":-12345678901234567890}]}}', pointer: '/a~1b/m~0n/1/id' },
  { name: 'the first in document order, not in canonical order', payload: '{"b":1234567890123456789,"a":0.10000000000000000001}', twin: '{"b":1234567890123456788,"a":0.1}', pointer: '/b' },
  { name: 'digits and quotes in strings are not numbers', payload: '{"x\\"1":"2\\\\","y":[3,"4",18446744073709551615]}', twin: '{"x\\"1":"2\\\\","y":[3,"4",18446744073709551616]}', pointer: '/y/2' },
  { name: 'refused in an ignored member too', payload: '{"amount":5,"nonce":1234567890123456789}', twin: '{"amount":5,"nonce":1234567890123456788}', ignore_fields: ['/nonce'], pointer: '/nonce' },
];

const refused = refusedCases.map((c) => {
  if (c.payload === c.twin || canonical(JSON.parse(c.payload)) !== canonical(JSON.parse(c.twin))) {
    throw new Error(`${c.name}: the twin does not collide`);
  }
  return { name: c.name, payload: c.payload, canonicalization: 'JSON', ignore_fields: c.ignore_fields ?? [], pointer: c.pointer };
});

const vectors = cases.map((c) => {
  const ignore = c.ignore_fields ?? [];
  let hashed = c.payload;
  let canonicalForm;
  if (c.canonicalization === 'JSON') {
    const doc = JSON.parse(c.payload);
    for (const p of ignore) removePointer(doc, p);
    canonicalForm = canonical(doc);
    hashed = canonicalForm;
  }
  const sha256 = createHash('sha256').update(Buffer.from(hashed, 'utf8')).digest('hex');
  return { name: c.name, payload: c.payload, canonicalization: c.canonicalization, ignore_fields: ignore, ...(canonicalForm !== undefined && { canonical: canonicalForm }), sha256 };
});
process.stdout.write(JSON.stringify({ vectors, refused }, null, 2) + '\n');
