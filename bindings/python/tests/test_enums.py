"""The package's tables of C codes (feature maps, FAVOR+ kinds, projection kinds and norms)
checked against include/performer.h itself, so that a code renumbered or added in the header
cannot silently mean something else from Python."""

import os
import re

import performer
from helpers import REPO

ENUM = re.compile(r"typedef enum (\w+) \{(.*?)\}", re.S)
MEMBER = re.compile(r"^\s*(PERFORMER_\w+)\s*=\s*(\d+)", re.M)


def header_enums():
    with open(os.path.join(REPO, "include", "performer.h"), encoding="utf-8") as f:
        text = f.read()
    return {name: {m: int(v) for m, v in MEMBER.findall(body)} for name, body in ENUM.findall(text)}


def c_names(table, prefix):
    """{"elu+1": 0, ...} -> {"PERFORMER_FEATURE_ELU_PLUS_ONE": 0, ...}."""
    spelled = {"elu+1": "elu_plus_one"}
    return {prefix + spelled.get(k, k).upper(): v for k, v in table.items()}


def test_linear_feature_maps_match_the_header():
    assert c_names(performer.linear._FEATURE_MAPS, "PERFORMER_FEATURE_") == header_enums()["performer_feature_map"]


def test_favor_tables_match_the_header():
    enums = header_enums()
    assert c_names(performer.favor._FAVOR_FEATURES, "PERFORMER_FAVOR_") == enums["performer_favor_feature_kind"]
    assert c_names(performer.favor._PROJECTION_KINDS, "PERFORMER_PROJECTION_") == enums["performer_favor_projection_kind"]
    assert c_names(performer.favor._NORMS, "PERFORMER_NORMS_") == enums["performer_favor_norms"]


def test_status_and_dtype_enums_are_parsed():
    # The extension names these codes through the header at compile time; here only that the
    # parser above sees them (a parser that found nothing would make the tests above vacuous).
    enums = header_enums()
    assert enums["performer_status"]["PERFORMER_OK"] == 0
    assert enums["performer_dtype"]["PERFORMER_FLOAT32"] == 0
    assert len(enums) >= 6
