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
  { name: 'json number forms', payload: '[1.0, 1e21, 1e20, 1e-7, 0.000001, -0, 0.1, 4.50, 123456789012345678901234, 9007199254740993]', canonicalization: 'JSON' },
  { name: 'json nested arrays and objects', payload: '[[[]],[{"z":1,"y":[2,1]}],{"b":{"d":null,"c":[]}}]', canonicalization: 'JSON' },
  { name: 'json string escapes', payload: '"line\\nbreak\\ttab \\"quote\\" back\\\\slash \\u001f \\u007f \\/"', canonicalization: 'JSON' },
  { name: 'json ignored volatile fields', payload: '{"amount":100,"timestamp":"2026-11-22T10:00:00Z","meta":{"trace":"abc","region":"eu"}}', canonicalization: 'JSON', ignore_fields: ['/timestamp', '/meta/trace'] },
  { name: 'json ignored fields that are absent', payload: '{"amount":100}', canonicalization: 'JSON', ignore_fields: ['/timestamp', '/x/y'] },
  { name: 'json escaped pointer tokens and array index', payload: '{"a/b":1,"m~n":2,"items":[{"id":1,"at":5},{"id":2,"at":6}]}', canonicalization: 'JSON', ignore_fields: ['/a~1b', '/m~0n', '/items/1/at'] },
];

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
process.stdout.write(JSON.stringify({ vectors }, null, 2) + '\n');
