"""The fact parser reads captions people and captioners write; scoring credits and blames
exactly what a caption gets right and wrong."""
from __future__ import annotations

import math

import pytest

from dalle3.world import Obj, Scene, Sign, aggregate, caption_facts, score_caption

RED_TL = Obj("circle", "red", "large", 0, 0)
RED_C = Obj("circle", "red", "small", 1, 1)
BLUE_BR = Obj("square", "blue", "small", 2, 2)
SCENE = Scene([RED_TL, RED_C, BLUE_BR], "beige", Sign("OPEN", 2, 0))


@pytest.mark.parametrize("text, category, expected", [
    ("Two RED Circles.", "count", {(2, "red", "circle")}),
    ("2 circles", "count", {(2, None, "circle")}),
    ("a single blue box", "count", {(1, "blue", "square")}),
    ("a big disc in the upper-left corner", "position", {(None, "circle", "top left")}),
    ("a big disc in the upper-left corner", "size", {("large", None, "circle")}),
    ("a violet triangle at the top middle", "position", {("purple", "triangle", "top")}),
    ("a tiny green square on the middle right side", "position", {("green", "square", "right")}),
    ("two red circles, a large one in the top left and a small one in the center", "size",
     {("large", "red", "circle"), ("small", "red", "circle")}),
    ("two red circles: one large at the top left, one small in the middle", "position",
     {("red", "circle", "top left"), ("red", "circle", "center")}),
    ("a red circle, large, in the lower right", "size", {("large", "red", "circle")}),
    ('a sign that says "open"', "sign", {("OPEN",)}),
    ("a sign that says open", "sign", {("OPEN",)}),
    ("the word \u201cSUN\u201d is written on a board", "sign", {("SUN",)}),
])
def test_parser_reads_common_phrasings(text, category, expected):
    assert caption_facts(text)[category] == expected


def test_a_sign_position_is_not_an_object_position():
    facts = caption_facts('A red circle. A sign at the top right says "BAR".')
    assert facts["position"] == set()
    assert facts["sign"] == {("BAR",)}


def test_background_and_generic_nouns_add_no_object_facts():
    facts = caption_facts("There are three objects on a red background.")
    assert all(not v for v in facts.values())


def test_a_truncated_caption_does_not_move_adjectives_onto_the_last_object():
    facts = caption_facts("a red circle in the center and a small blue")
    assert facts["size"] == set() and facts["colour"] == {("red", "circle")}


def test_articles_are_not_counts():
    assert caption_facts("a large red circle in the top left")["count"] == set()


def test_full_and_correct_caption_scores_perfectly():
    text = ('Two red circles, a large one in the top left and a small one in the center, and one '
            'small blue square in the bottom right on a beige background. A sign says "OPEN".')
    score = score_caption(text, SCENE)
    assert all(v["correct"] == v["present"] and v["false"] == 0 for v in score.values()), score


def test_wrong_attributes_are_false():
    # Sizes bind to colour and shape: the big one is the red circle, not the blue square.
    score = score_caption("a small red circle and a large blue square", SCENE)["size"]
    assert score == {"present": 3, "stated": 2, "correct": 1, "false": 1}
    assert score_caption("a red circle in the bottom right", SCENE)["position"]["false"] == 1
    assert score_caption("a blue circle", SCENE)["colour"]["false"] == 1
    assert score_caption('a sign that says "STOP"', SCENE)["sign"] == {
        "present": 1, "stated": 1, "correct": 0, "false": 1}


def test_colourless_counts_count_all_objects_of_the_shape():
    assert score_caption("two circles", SCENE)["count"] == {
        "present": 2, "stated": 1, "correct": 1, "false": 0}  # the only circle group
    assert score_caption("three circles", SCENE)["count"]["false"] == 1
    mixed = Scene([RED_TL, Obj("circle", "blue", "small", 1, 1)], "white")
    # True (two circles) but it names neither group, so it earns no recall.
    assert score_caption("two circles", mixed)["count"] == {
        "present": 2, "stated": 1, "correct": 0, "false": 0}


def test_colourless_position_is_credited_to_the_object_it_singles_out():
    score = score_caption("a circle in the top left", SCENE)["position"]
    assert score == {"present": 3, "stated": 1, "correct": 1, "false": 0}


def test_aggregate_pools_counts_and_marks_empty_ratios_nan():
    scores = [score_caption("two red circles", SCENE), score_caption("a blue circle", SCENE)]
    pooled = aggregate(scores)
    assert pooled["count"]["recall"] == pytest.approx(1 / 4)
    assert pooled["colour"]["false_rate"] == pytest.approx(1 / 2)
    assert math.isnan(pooled["sign"]["false_rate"])
    assert math.isnan(aggregate([])["shape"]["recall"])
