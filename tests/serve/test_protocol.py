"""The binary answer layout: arrays come back bit for bit, as views, with the JSON beside."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glitchflow.serve.protocol import decode_answer, encode_answer, jsonable, wants_binary


def test_binary_answer_round_trips_arrays_and_fields():
    rng = np.random.default_rng(0)
    answer = {
        "veto": True,
        "max_real_snr2": np.float32(812.5),
        "generated": rng.random((64, 43)).astype(np.float32),
        "subtraction": {
            "glitches": [{"gps": 1400000001.25, "subtracted": True}],
            "cleaned_strain": {"gps_start": 1400000000.0, "data": rng.normal(size=16385) * 1e-21},
        },
    }
    body = encode_answer(answer)
    back = decode_answer(body)
    np.testing.assert_array_equal(back["generated"], answer["generated"])
    assert back["generated"].dtype == np.float32 and back["generated"].shape == (64, 43)
    strain = back["subtraction"]["cleaned_strain"]["data"]
    np.testing.assert_array_equal(strain, answer["subtraction"]["cleaned_strain"]["data"])
    assert strain.ctypes.data % 8 == 0 and not strain.flags.writeable  # a view of the body
    assert back["subtraction"]["glitches"] == answer["subtraction"]["glitches"]
    assert back["max_real_snr2"] == 812.5 and back["veto"] is True
    # the JSON layout carries the same answer as lists
    as_json = json.loads(json.dumps(jsonable(answer)))
    assert as_json["generated"] == answer["generated"].tolist()


def test_not_an_answer_is_refused_and_accept_headers_are_read():
    with pytest.raises(ValueError, match="not a glitchflow binary answer"):
        decode_answer(b"GFW1" + bytes(8))
    assert wants_binary("application/octet-stream")
    assert wants_binary("application/json;q=0.5, application/octet-stream")
    assert not wants_binary("application/json") and not wants_binary(None)
