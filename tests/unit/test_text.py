import pytest

from i2tt_server.runners.base import group_indices
from i2tt_server.text import clean_caption, clean_tags


@pytest.mark.parametrize("raw, clean", [
    ("arafed wooden blocks spelling trivia on a wooden surface",
     "wooden blocks spelling trivia on a wooden surface"),
    ("there is a araffe man sitting", "there is a man sitting"),
    ("Arafed dog and arafe cat", "dog and cat"),
    ("a giraffe next to a paraffin lamp", "a giraffe next to a paraffin lamp"),
    ("a photography of a wooden block", "a photography of a wooden block"),
])
def test_clean_caption(raw, clean):
    assert clean_caption(raw) == clean


def test_clean_tags_from_the_seed_example():
    raw = "Photography, Creativity, Storytelling, a Photography, Documentary, a Storytelling, Creative"
    assert clean_tags(raw) == ["Photography", "Creativity", "Storytelling", "Documentary", "Creative"]


def test_clean_tags_trims_drops_empty_and_dedups_case_insensitively():
    assert clean_tags(" the Sea ,, , sea, An apple,AN APPLE,  ocean  ") == ["Sea", "apple", "ocean"]
    assert clean_tags("") == []


def test_article_only_removed_as_a_word():
    assert clean_tags("Anatomy, Theory, a") == ["Anatomy", "Theory", "a"]


def test_group_indices_keeps_first_seen_order():
    assert group_indices(["p", None, "p", "q", None]) == {"p": [0, 2], None: [1, 4], "q": [3]}
    assert group_indices([]) == {}
