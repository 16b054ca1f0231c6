"""Labels and captions told apart (vtsearch-lite scores them differently)."""

from __future__ import annotations

import pytest

from vtsearch.models.query_kind import is_label


@pytest.mark.parametrize(
    "text",
    ["pasta", "a photo of a tulip", "A picture of my blue dress", "baby back ribs",
     "long-sleeve shirt", "the beach", "Straße", "a close-up photo of a golden retriever"],
)  # fmt: skip
def test_short_noun_phrases_are_labels(text):
    assert is_label(text)


@pytest.mark.parametrize(
    "text",
    ["a dog runs along the beach", "A man is climbing a rock .", "a photo of a dog on a beach",
     "cats and dogs", "two children playing in the snow with a red sled", "", "  ", "2024"],
)  # fmt: skip
def test_sentences_and_scenes_are_not(text):
    assert not is_label(text)


def test_the_concept_encoder_cannot_unpack_into_a_file(tmp_path):
    from vtsearch.errors import ModelNotFoundError
    from vtsearch.models.mpnet import mpnet_path

    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(ModelNotFoundError, match="VTSEARCH_CACHE"):
        mpnet_path(blocked)
