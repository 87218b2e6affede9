"""The EPCIS export's events validate against GS1's EPCIS 2.0 JSON schema, and say what
READERS.md section 4 maps them to."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from api.routes.epcis import delivery_event, document, epc_uri, loading_event, pass_event

SCHEMA = Path(__file__).resolve().parents[2] / "var/cache/epcis/EPCIS-JSON-Schema.json"
T = datetime(2026, 11, 24, 14, 32, 10, 123456, tzinfo=UTC)
SSCC = "3174257BF4499602D2000000"  # SSCC-96, filter 3
SGTIN = "3074257BF7194E4000001A85"  # READERS.md's SGTIN-96 worked example
RAW = "E2801160600002084D4B1C7A"  # an Impinj TID-style EPC: not a GS1 EPC


def load_validator() -> jsonschema.Draft7Validator:
    """GS1's schema, with format checks (date-time, uri) on."""
    if not SCHEMA.exists():
        pytest.fail(f"{SCHEMA} is missing: `make unit` or `make test` fetches it")
    schema = json.loads(SCHEMA.read_text())
    assert schema["$id"] == "https://gs1.github.io/EPCIS/EPCIS-JSON-Schema.json"
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return load_validator()


def errors(v: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in v.iter_errors(doc)]


def test_a_day_of_events_is_a_valid_epcis_document(validator: jsonschema.Draft7Validator) -> None:
    events = [
        pass_event(T, "G-3", SGTIN, "out", "DOCK-3"),
        pass_event(T, "G-3", SSCC, "in", None),
        pass_event(T, "G-3", RAW, "unknown", "DOCK-3"),
        loading_event(T, "5b0c...", SSCC, "VAN-0042", "3154257BF4499602D2000000"),
        loading_event(T, "5b0d...", SGTIN, "VAN-0043", None),
        delivery_event(T, "5b0e...", SGTIN, "S-17"),
        delivery_event(T, "5b0f...", RAW, None),
    ]
    doc = document(events, T)
    assert errors(validator, doc) == []
    assert doc["@context"] == ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
    out, inbound, unknown, loading, _, delivered, _ = events
    assert (out["bizStep"], out["disposition"], out["action"]) == ("departing", "in_transit",
                                                                   "OBSERVE")  # fmt: skip
    assert (inbound["bizStep"], inbound["disposition"]) == ("arriving", "in_progress")
    assert "bizStep" not in unknown and unknown["epcList"] == [f"urn:epc:raw:96.x{RAW}"]
    assert loading["type"] == "AggregationEvent" and loading["action"] == "ADD"
    assert loading["parentID"].startswith("urn:epc:id:sscc:")
    assert events[4]["parentID"] == "urn:milepost:vehicle:VAN-0043"
    assert delivered["bizStep"] == "accepting"
    assert delivered["destinationList"] == [{"type": "possessing_party",
                                             "destination": "urn:milepost:stop:S-17"}]
    assert out["eventTime"] == "2026-11-24T14:32:10.123Z" and out["eventTimeZoneOffset"] == "+00:00"
    # the same row always gives the same event id, different rows different ones
    assert pass_event(T, "G-3", SGTIN, "out", "DOCK-3")["eventID"] == out["eventID"]
    assert len({e["eventID"] for e in events}) == len(events)


def test_the_schema_is_strict_enough_to_catch_our_mistakes(
    validator: jsonschema.Draft7Validator,
) -> None:
    good = pass_event(T, "G-3", SGTIN, "out", "DOCK-3")
    for broken in ({**good, "bizStep": "urn:epcglobal:cbv:bizstep:departing"},  # not bare
                   {**good, "eventTimeZoneOffset": "Z"},
                   {k: v for k, v in good.items() if k != "action"}):
        assert errors(validator, document([broken], T)), broken


def test_epc_uris() -> None:
    assert epc_uri(SGTIN) == "urn:epc:id:sgtin:0614141.812345.6789"
    assert epc_uri(RAW) == f"urn:epc:raw:96.x{RAW}"
