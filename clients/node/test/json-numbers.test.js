// The JSON number rule against the shared golden vectors (no server).
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { firstInexactNumber, keepsItsValue } = require('../json-numbers');

const golden = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'testdata', 'fingerprints.json'), 'utf8'));

test('the refused golden vectors are refused naming the number', () => {
  assert.ok(golden.refused.length >= 10);
  for (const vector of golden.refused) assert.equal(firstInexactNumber(vector.payload), vector.pointer, vector.name);
});

test('the accepted golden vectors keep every number', () => {
  for (const vector of golden.vectors.filter((v) => v.canonicalization === 'JSON')) {
    assert.equal(firstInexactNumber(vector.payload), null, vector.name);
  }
});

test('one number in any spelling is kept and a changed one is not', () => {
  for (const literal of ['1', '1.0', '1e0', '-0', '0.1', '9007199254740992', '1e21', '1152921504606847000', '5e-324', '0e99999999999999999999']) {
    assert.ok(keepsItsValue(literal), literal);
  }
  for (const literal of ['1234567890123456789', '9007199254740993', '1152921504606846976', '0.10000000000000000001', '1e-400', '1e400']) {
    assert.ok(!keepsItsValue(literal), literal);
  }
});

test('deep nesting, strings and literals are walked without recursion', () => {
  const deep = '['.repeat(100000) + '1234567890123456789' + ']'.repeat(100000);
  assert.equal(firstInexactNumber(deep), '/0'.repeat(100000));
  assert.equal(firstInexactNumber('{"a":[true,false,null,"-1\\"2",{}],"b":{"":[[],-0.5]}}'), null);
  assert.equal(firstInexactNumber('{"":{"x":[0, 1e-400]}}'), '//x/1');
  assert.equal(firstInexactNumber('[{}, "x", {"a/b":[], "c": 1e-400}]'), '/2/c');
});
