"""EPC-96 decoding and encoding: SGTIN-96 (header 0x30) and SSCC-96 (header 0x31).

Implements GS1 Tag Data Standard section 14 as summarised in READERS.md section 2: the
pure-identity URN, the tag URI (which keeps the filter value), the GS1 key with its
mod-10 check digit (GTIN-14, SSCC-18) and the partition table, validated exactly as
the TDS says (partition 7 is reserved, company prefix and reference must fit their
decimal digits, SSCC's 24 reserved bits must be zero).

:func:`decode_epc` never raises: anything it cannot decode comes back with
``scheme`` ``"unknown"`` (a raw EPC, to be kept as hex) or ``None`` (not an EPC at
all: bad hex, odd or out-of-range length) and a ``reason``. The encoders raise
:class:`ValueError` for arguments outside the standard.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

SGTIN96_HEADER = 0x30
SSCC96_HEADER = 0x31
MAX_EPC_BITS = 496  # Gen2 EPC memory holds at most 31 words of EPC

# partition -> (company-prefix bits, company-prefix digits); the reference gets the rest
_PARTITIONS = ((40, 12), (37, 11), (34, 10), (30, 9), (27, 8), (24, 7), (20, 6))
_SGTIN_GTIN_BITS, _SGTIN_DIGITS, _SERIAL_BITS = 44, 13, 38
_SSCC_KEY_BITS, _SSCC_DIGITS, _SSCC_RESERVED_BITS = 58, 17, 24

# TDS headers of the other GS1 schemes: recognised by name, kept raw
_OTHER_GS1 = {
    0x2C: "gdti-96", 0x2D: "gsrn-96", 0x32: "sgln-96", 0x33: "grai-96", 0x34: "giai-96",
    0x35: "gid-96", 0x36: "sgtin-198", 0x3C: "cpi-96", 0xF9: "sscc+",
}
_FILTER_NAMES = {
    "sgtin-96": ("all others", "point of sale item", "full case for transport", "reserved",
                 "inner pack", "reserved", "unit load", "component"),
    "sscc-96": ("all others", "reserved", "full case for transport", "reserved",
                "reserved", "reserved", "unit load", "reserved"),
}
_HEX = re.compile(r"[0-9A-F]*")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class EpcInfo:
    """What an EPC is. ``scheme`` is ``"sgtin-96"`` or ``"sscc-96"`` only when the EPC
    decoded; then ``reason`` is ``None`` and every identity field is set.

    ``reference`` is the SGTIN indicator digit + item reference, or the SSCC extension
    digit + serial reference, zero-padded to their TDS width. ``serial`` is the SGTIN-96
    serial as an integer (``None`` for SSCC).
    """

    epc_hex: str
    scheme: str | None
    reason: str | None = None
    header: int | None = None
    filter: int | None = None
    partition: int | None = None
    company_prefix: str | None = None
    reference: str | None = None
    serial: int | None = None
    pure_identity_urn: str | None = None
    tag_uri: str | None = None
    gs1_key: str | None = None

    @property
    def decoded(self) -> bool:
        return self.reason is None

    @property
    def filter_name(self) -> str | None:
        if self.scheme not in _FILTER_NAMES or self.filter is None:
            return None
        return _FILTER_NAMES[self.scheme][self.filter]

    @property
    def gs1_element_string(self) -> str | None:
        if self.scheme == "sgtin-96":
            return f"(01){self.gs1_key}(21){self.serial}"
        if self.scheme == "sscc-96":
            return f"(00){self.gs1_key}"
        return None

    def to_json_dict(self) -> dict[str, str | int | None]:
        """Every field plus ``filter_name`` and ``gs1_element_string``; a stable key set."""
        out: dict[str, str | int | None] = asdict(self)
        out["filter_name"] = self.filter_name
        out["gs1_element_string"] = self.gs1_element_string
        return out


def gs1_check_digit(digits: str) -> int:
    """GS1 mod-10: weights 3, 1, 3, ... from the rightmost digit."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def decode_epc(epc_hex: str) -> EpcInfo:
    """Decode one EPC given as hex (either case, surrounding whitespace ignored)."""
    text = epc_hex.strip().upper()
    if not text:
        return EpcInfo(epc_hex, None, "empty")
    if not _HEX.fullmatch(text):
        return EpcInfo(epc_hex, None, "not a hexadecimal string")
    if len(text) % 2:
        return EpcInfo(epc_hex, None, f"odd number of hex digits ({len(text)})")
    if len(text) * 4 > MAX_EPC_BITS:
        return EpcInfo(epc_hex, None, f"{len(text) * 4} bits is longer than an EPC can be")
    header = int(text[:2], 16)
    if header not in (SGTIN96_HEADER, SSCC96_HEADER):
        known = _OTHER_GS1.get(header)
        why = (f"GS1 scheme {known} (header 0x{header:02X}) is not decoded" if known
               else f"header 0x{header:02X} is not a GS1 EPC header")
        return EpcInfo(text, "unknown", why, header)
    scheme = "sgtin-96" if header == SGTIN96_HEADER else "sscc-96"
    if len(text) != 24:
        return EpcInfo(text, "unknown", f"{scheme} needs 96 bits, got {len(text) * 4}", header)
    value = int(text, 16)
    parts = _split(value, scheme)
    if isinstance(parts, str):
        return EpcInfo(text, "unknown", f"invalid {scheme}: {parts}", header)
    filt, partition, cp, ref = parts
    key = ref[0] + cp + ref[1:]
    key += str(gs1_check_digit(key))
    if header == SSCC96_HEADER:
        return EpcInfo(
            text, scheme, None, header, filt, partition, cp, ref, None,
            pure_identity_urn=f"urn:epc:id:sscc:{cp}.{ref}",
            tag_uri=f"urn:epc:tag:sscc-96:{filt}.{cp}.{ref}",
            gs1_key=key,
        )
    serial = value & ((1 << _SERIAL_BITS) - 1)
    return EpcInfo(
        text, scheme, None, header, filt, partition, cp, ref, serial,
        pure_identity_urn=f"urn:epc:id:sgtin:{cp}.{ref}.{serial}",
        tag_uri=f"urn:epc:tag:sgtin-96:{filt}.{cp}.{ref}.{serial}",
        gs1_key=key,
    )


def _split(value: int, scheme: str) -> tuple[int, int, str, str] | str:
    """Filter, partition, company prefix and reference of a 96-bit SGTIN/SSCC, or why not."""
    if scheme == "sscc-96":
        if value & ((1 << _SSCC_RESERVED_BITS) - 1):
            return "the 24 reserved bits are not zero"
        key_bits, key_digits = _SSCC_KEY_BITS, _SSCC_DIGITS
    else:
        key_bits, key_digits = _SGTIN_GTIN_BITS, _SGTIN_DIGITS
    filt, partition = (value >> 85) & 7, (value >> 82) & 7
    if partition == 7:
        return "partition 7 is reserved"
    cp_bits, cp_digits = _PARTITIONS[partition]
    ref_bits, ref_digits = key_bits - cp_bits, key_digits - cp_digits
    shift = 82 - cp_bits
    cp = (value >> shift) & ((1 << cp_bits) - 1)
    ref = (value >> (shift - ref_bits)) & ((1 << ref_bits) - 1)
    if cp >= 10**cp_digits:
        return f"company prefix {cp} has more than {cp_digits} digits (partition {partition})"
    if ref >= 10**ref_digits:
        return f"reference {ref} has more than {ref_digits} digits (partition {partition})"
    return filt, partition, f"{cp:0{cp_digits}d}", f"{ref:0{ref_digits}d}"


def encode_sgtin96(company_prefix: str, item_ref: str, serial: int, filter: int) -> str:
    """SGTIN-96 as 24 upper-case hex digits. ``item_ref`` includes the indicator digit."""
    partition = _partition(company_prefix, item_ref, _SGTIN_DIGITS)
    _check_int("filter", filter, 7)
    _check_int("serial", serial, (1 << _SERIAL_BITS) - 1)
    value = _pack(SGTIN96_HEADER, filter, partition, company_prefix, item_ref, _SGTIN_GTIN_BITS)
    return f"{(value << _SERIAL_BITS) | serial:024X}"


def encode_sscc96(company_prefix: str, serial_ref: str, filter: int) -> str:
    """SSCC-96 as 24 upper-case hex digits. ``serial_ref`` includes the extension digit."""
    partition = _partition(company_prefix, serial_ref, _SSCC_DIGITS)
    _check_int("filter", filter, 7)
    value = _pack(SSCC96_HEADER, filter, partition, company_prefix, serial_ref, _SSCC_KEY_BITS)
    return f"{value << _SSCC_RESERVED_BITS:024X}"


def _partition(company_prefix: str, reference: str, key_digits: int) -> int:
    for name, digits in (("company_prefix", company_prefix), ("reference", reference)):
        if not _DIGITS.fullmatch(digits):
            raise ValueError(f"{name} must be decimal digits, got {digits!r}")
    if len(company_prefix) + len(reference) != key_digits:
        raise ValueError(f"company prefix and reference must have {key_digits} digits together")
    for partition, (_, cp_digits) in enumerate(_PARTITIONS):
        if cp_digits == len(company_prefix):
            return partition
    raise ValueError(f"company prefix must have 6 to 12 digits, got {len(company_prefix)}")


def _pack(header: int, filt: int, partition: int, cp: str, ref: str, key_bits: int) -> int:
    cp_bits = _PARTITIONS[partition][0]
    value = (header << 3 | filt) << 3 | partition
    return ((value << cp_bits) | int(cp)) << (key_bits - cp_bits) | int(ref)


def _check_int(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an integer in 0..{maximum}, got {value!r}")
