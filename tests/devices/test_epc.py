"""EPC-96: the shared test vectors, epcpy as an oracle, invalid EPCs, the encoders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from epcpy.epc_schemes.sgtin import SGTIN, SGTINFilterValue
from epcpy.epc_schemes.sscc import SSCC, SSCCFilterValue
from epcpy.utils.common import ConvertException
from epcpy.utils.parsers import hex_to_tag_encodable
from hypothesis import given
from hypothesis import strategies as st

from devices.epc import EpcInfo, decode_epc, encode_sgtin96, encode_sscc96, gs1_check_digit

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
VECTORS = DATA / "epc" / "epc96_test_vectors.tsv"
PARTITIONS = ((40, 12), (37, 11), (34, 10), (30, 9), (27, 8), (24, 7), (20, 6))


class Vector(NamedTuple):
    epc_hex: str
    scheme: str
    filter: str
    partition: str
    urn: str
    tag_uri: str
    gs1_key: str
    note: str


def _vectors() -> list[Vector]:
    if not VECTORS.is_file():
        raise FileNotFoundError(
            f"EPC test vectors missing: {VECTORS}. The shared/ directory with the project's "
            "sample data must sit beside the repository root.")
    rows = [line.split("\t") for line in VECTORS.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return [Vector(*row[:8]) for row in rows]


VECTOR_ROWS = _vectors()


def test_vectors_are_all_there() -> None:
    assert len(VECTOR_ROWS) == 6
    assert sum(v.scheme.startswith("(not GS1") for v in VECTOR_ROWS) == 1


@pytest.mark.parametrize("v", VECTOR_ROWS, ids=lambda v: v.epc_hex)
def test_shared_vector(v: Vector) -> None:
    info = decode_epc(v.epc_hex)
    if v.scheme.startswith("(not GS1"):
        assert (info.scheme, info.decoded, info.pure_identity_urn) == ("unknown", False, None)
        assert info.reason and "header 0x00" in info.reason
        return
    assert info.decoded and info.reason is None
    assert (info.scheme, info.filter, info.partition) == (v.scheme, int(v.filter), int(v.partition))
    assert (info.pure_identity_urn, info.tag_uri, info.gs1_key) == (v.urn, v.tag_uri, v.gs1_key)


def test_readers_md_worked_examples() -> None:
    # READERS.md 2, "Worked examples" and the check-digit example
    assert gs1_check_digit("8061414112345") == 8
    info = decode_epc("30C579D5D4ADB60000000000")
    assert info.pure_identity_urn == "urn:epc:id:sgtin:50712192365.88.0"
    assert info.gs1_key == "85071219236581" and info.filter_name == "unit load"
    info = decode_epc("3074257BF7194E4000001A85")
    assert info.gs1_element_string == "(01)80614141123458(21)6789"
    assert decode_epc("3154257BF4499602D2000000").gs1_element_string == "(00)106141412345678908"


def test_json_dict_is_stable_and_serialisable() -> None:
    good, bad = decode_epc("3154257bf4499602d2000000"), decode_epc("nope")
    assert good.to_json_dict().keys() == bad.to_json_dict().keys()
    line = json.loads(json.dumps(good.to_json_dict()))
    assert line["scheme"] == "sscc-96" and line["gs1_key"] == "106141412345678908"
    assert line["epc_hex"] == "3154257BF4499602D2000000" and line["filter"] == 2
    assert json.loads(json.dumps(bad.to_json_dict()))["reason"] == "not a hexadecimal string"


# ------------------------------------------------------------------ invalid EPCs


@pytest.mark.parametrize(("epc", "scheme", "why"), [
    ("", None, "empty"),
    ("30 74", None, "hexadecimal"),
    ("3074257BF7194E4000001A8", None, "odd"),
    ("30" * 63, None, "longer"),
    ("307C257BF7194E4000001A85", "unknown", "partition 7"),
    ("3154257BF4499602D2000001", "unknown", "reserved bits"),
    ("3023FFFFFFFFFC4000000005", "unknown", "company prefix"),  # P 0: 2^40-1 > 12 digits
    ("303878903FFFFFC000000005", "unknown", "reference"),  # P 6: item ref 2^24-1 > 7 digits
    ("314000000001EFFFFF000000", "unknown", "reference"),  # SSCC P 0: 2^18-1 > 5 digits
    ("3074257BF7194E4000001A8500000000", "unknown", "needs 96 bits"),
    ("3074257B", "unknown", "needs 96 bits"),
    ("3274257BF7194E4000001A85", "unknown", "sgln-96"),
    ("E28068940000400A9D22A9EB", "unknown", "header 0xE2"),
    ("00323038", "unknown", "header 0x00"),
])
def test_invalid_epcs_give_a_reason(epc: str, scheme: str | None, why: str) -> None:
    info = decode_epc(epc)
    assert info.scheme == scheme and not info.decoded
    assert info.reason is not None and why in info.reason
    assert info.pure_identity_urn is info.tag_uri is info.gs1_key is None


@given(st.text(max_size=40))
def test_decode_never_raises(text: str) -> None:
    info = decode_epc(text)
    assert isinstance(info, EpcInfo) and info.decoded == (info.scheme in ("sgtin-96", "sscc-96"))
    json.dumps(info.to_json_dict())


# ------------------------------------------------------------------ epcpy as the oracle


@st.composite
def gs1_epc96(draw: st.DrawFn, header: int) -> int:
    """A valid SGTIN-96 (0x30) or SSCC-96 (0x31) value, built bit by bit, any partition."""
    partition = draw(st.integers(0, 6))
    cp_bits, cp_digits = PARTITIONS[partition]
    key_bits, key_digits = (44, 13) if header == 0x30 else (58, 17)
    cp = draw(st.integers(0, 10**cp_digits - 1))
    ref = draw(st.integers(0, 10 ** (key_digits - cp_digits) - 1))
    value = (header << 3 | draw(st.integers(0, 7))) << 3 | partition
    value = ((value << cp_bits) | cp) << (key_bits - cp_bits) | ref
    if header == 0x30:
        return value << 38 | draw(st.integers(0, 2**38 - 1))
    return value << 24


def _oracle(epc: str, info: EpcInfo) -> None:
    tag = hex_to_tag_encodable(epc)
    assert info.pure_identity_urn == tag.epc_uri
    assert isinstance(tag, SGTIN | SSCC)
    assert info.gs1_key == tag.gs1_key()
    if isinstance(tag, SGTIN):
        assert info.tag_uri == tag.tag_uri(
            binary_coding_scheme=SGTIN.BinaryCodingScheme.SGTIN_96,
            filter_value=SGTINFilterValue(str(info.filter)))
    else:
        assert info.tag_uri == tag.tag_uri(
            binary_coding_scheme=SSCC.BinaryCodingScheme.SSCC_96,
            filter_value=SSCCFilterValue(str(info.filter)))


@given(st.one_of(gs1_epc96(0x30), gs1_epc96(0x31)))
def test_valid_epcs_match_epcpy(value: int) -> None:
    epc = f"{value:024X}"
    info = decode_epc(epc)
    assert info.decoded, info.reason
    _oracle(epc, info)


@given(st.sampled_from([0x30, 0x31]), st.integers(0, 2**88 - 1))
def test_random_epcs_decode_exactly_when_epcpy_does(header: int, rest: int) -> None:
    epc = f"{header:02X}{rest:022X}"
    info = decode_epc(epc)
    reserved_ok = header == 0x30 or rest & 0xFFFFFF == 0  # epcpy ignores SSCC reserved bits
    try:
        hex_to_tag_encodable(epc)
        epcpy_ok = True
    except ConvertException:
        epcpy_ok = False
    assert info.decoded == (epcpy_ok and reserved_ok), info.reason
    if info.decoded:
        _oracle(epc, info)


# ------------------------------------------------------------------ encoders


def test_encoders_reproduce_worked_examples() -> None:
    assert encode_sgtin96("0614141", "812345", 6789, 3) == "3074257BF7194E4000001A85"
    assert encode_sgtin96("50712192365", "88", 0, 6) == "30C579D5D4ADB60000000000"
    assert encode_sscc96("0614141", "1234567890", 2) == "3154257BF4499602D2000000"
    assert encode_sscc96("061414", "12345678901", 2) == "31583BF982DFDC1C35000000"


@given(st.one_of(gs1_epc96(0x30), gs1_epc96(0x31)))
def test_encode_inverts_decode(value: int) -> None:
    info = decode_epc(f"{value:024X}")
    assert info.company_prefix and info.reference and info.filter is not None
    if info.scheme == "sgtin-96":
        assert info.serial is not None
        again = encode_sgtin96(info.company_prefix, info.reference, info.serial, info.filter)
    else:
        again = encode_sscc96(info.company_prefix, info.reference, info.filter)
    assert again == info.epc_hex


@pytest.mark.parametrize("args", [
    ("0614141", "81234", 1, 0),  # 12 digits, not 13
    ("06141", "81234567", 1, 0),  # 5-digit company prefix
    ("061414a", "812345", 1, 0),  # not digits
    ("0614141", "812345", 2**38, 0),  # serial over 38 bits
    ("0614141", "812345", -1, 0),
    ("0614141", "812345", 1, 8),  # filter over 3 bits
])
def test_sgtin_encoder_refuses_bad_arguments(args: tuple[str, str, int, int]) -> None:
    with pytest.raises(ValueError):
        encode_sgtin96(*args)


def test_sscc_encoder_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encode_sscc96("0614141", "123456789", 2)  # 16 digits, not 17
    with pytest.raises(ValueError):
        encode_sscc96("0614141", "1234567890", True)
