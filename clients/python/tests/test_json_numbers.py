"""The JSON number rule against the shared golden vectors (no server)."""

import json
import pathlib

from idempotency_client.json_numbers import first_inexact_number, keeps_its_value, loads

GOLDEN = json.loads((pathlib.Path(__file__).resolve().parents[3] / "testdata" / "fingerprints.json").read_text())


def test_the_refused_golden_vectors_are_refused_naming_the_number():
    assert len(GOLDEN["refused"]) >= 10
    for vector in GOLDEN["refused"]:
        assert first_inexact_number(vector["payload"]) == vector["pointer"], vector["name"]


def test_the_accepted_golden_vectors_keep_every_number():
    for vector in GOLDEN["vectors"]:
        if vector["canonicalization"] == "JSON":
            assert first_inexact_number(vector["payload"]) is None, vector["name"]


def test_one_number_in_any_spelling_is_kept_and_a_changed_one_is_not():
    for literal in ["1", "1.0", "1e0", "-0", "0.1", "9007199254740992", "1e21", "1152921504606847000", "5e-324"]:
        assert keeps_its_value(literal), literal
    for literal in ["1234567890123456789", "9007199254740993", "1152921504606846976", "0.10000000000000000001", "1e-400", "1e400"]:
        assert not keeps_its_value(literal), literal


def test_kept_numbers_are_parsed_as_sent():
    parsed, pointer = loads('{"id": 9007199254740992, "f": 0.1, "e": 1e21, "xs": [1, 2.5]}')
    assert pointer is None
    assert parsed == {"id": 9007199254740992, "f": 0.1, "e": 1e21, "xs": [1, 2.5]}
    assert type(parsed["id"]) is int and type(parsed["f"]) is float
