"""Prefix mapper: mean pooling forgets order, the sequence prefix keeps it."""
import pytest
import torch

from visiontales.prefix import PrefixMapper


@pytest.mark.parametrize("mode,tokens", [("mean", 5), ("sequence", 15)])
def test_prefix_shapes(mode, tokens):
    mapper = PrefixMapper(feature_dim=16, embed_dim=8, prefix_length=5, mode=mode)
    assert mapper(torch.randn(2, 3, 16)).shape == (2, tokens, 8)
    assert mapper.num_tokens(3) == tokens


def test_mean_prefix_ignores_order_and_sequence_prefix_does_not():
    torch.manual_seed(0)
    feats = torch.randn(1, 3, 16)
    reversed_feats = feats.flip(1)
    mean = PrefixMapper(16, 8, 4, "mean")
    seq = PrefixMapper(16, 8, 4, "sequence")
    assert torch.allclose(mean(feats), mean(reversed_feats), atol=1e-6)
    assert not torch.allclose(seq(feats), seq(reversed_feats), atol=1e-3)
    # the same image in two positions gets different prefix blocks (learned position)
    same = torch.randn(1, 1, 16).expand(1, 2, 16)
    blocks = seq(same).view(2, 4, 8)
    assert not torch.allclose(blocks[0], blocks[1])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="prefix mode"):
        PrefixMapper(16, 8, 4, "attention")
    with pytest.raises(ValueError, match="at most 2 images"):
        PrefixMapper(16, 8, 4, "sequence", max_images=2)(torch.randn(1, 3, 16))
