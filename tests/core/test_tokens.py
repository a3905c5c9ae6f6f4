"""Token helpers: image-pad expansion, position mapping, multimodal token types."""

from __future__ import annotations

import pytest

from core.tokens import expand_image_pads, expanded_positions, mm_token_type_ids

PAD = 9


def test_expand_and_positions_agree() -> None:
    ids = [1, PAD, 2, 3, PAD, 4]
    expanded = expand_image_pads(ids, PAD, [3, 2])
    assert expanded == [1, PAD, PAD, PAD, 2, 3, PAD, PAD, 4]
    where = expanded_positions(ids, PAD, [3, 2])
    assert where == [0, 1, 4, 5, 6, 8]
    assert [expanded[i] for i in where] == ids
    assert mm_token_type_ids(expanded, PAD) == [0, 1, 1, 1, 0, 0, 1, 1, 0]


def test_placeholder_count_must_match_images() -> None:
    with pytest.raises(ValueError, match="2 image placeholders for 1 images"):
        expand_image_pads([PAD, PAD], PAD, [4])
