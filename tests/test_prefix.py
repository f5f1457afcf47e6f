"""Prefix mapper: mean pooling forgets order, the sequence prefix keeps it."""
import pytest
import torch

from visiontales.model.prefix import PrefixMapper


@pytest.mark.parametrize("mode,tokens", [("mean", 5), ("sequence", 15)])
def test_prefix_shapes(mode, tokens):
    mapper = PrefixMapper(feature_dim=16, embed_dim=8, prefix_length=5, mode=mode)
    assert mapper(torch.randn(2, 3, 16)).shape == (2, tokens, 8)
    assert mapper.num_tokens(3) == tokens


# order-blind within 1e-6 (mean), order-aware beyond 1e-3 (sequence)
@pytest.mark.parametrize("mode,order_blind,atol", [("mean", True, 1e-6), ("sequence", False, 1e-3)])
def test_only_the_sequence_prefix_sees_the_image_order(mode, order_blind, atol):
    torch.manual_seed(0)
    feats = torch.randn(1, 3, 16)
    mapper = PrefixMapper(16, 8, 4, mode)
    assert torch.allclose(mapper(feats), mapper(feats.flip(1)), atol=atol) == order_blind


def test_the_same_image_in_two_positions_gets_two_prefix_blocks():
    torch.manual_seed(0)
    seq = PrefixMapper(16, 8, 4, "sequence")
    same = torch.randn(1, 1, 16).expand(1, 2, 16)
    blocks = seq(same).view(2, 4, 8)
    assert not torch.allclose(blocks[0], blocks[1])  # a learned position per image


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="prefix mode"):
        PrefixMapper(16, 8, 4, "attention")
    with pytest.raises(ValueError, match="at most 2 images"):
        PrefixMapper(16, 8, 4, "sequence", max_images=2)(torch.randn(1, 3, 16))
