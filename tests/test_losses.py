import pytest
import torch

from napari_denodet.core.losses import (
    balanced_bce,
    blind_spot_mask,
    detection_loss,
    gaussian_heatmap,
    jensen_shannon,
    local_terms,
    positive_unlabelled_loss,
)


def test_gaussian_heatmap_peaks_at_one_at_integer_centres_and_max_combines():
    centres = torch.tensor([[0, 10.0, 12.0], [0, 10.0, 13.0], [1, 3.0, 4.0]])
    hm = gaussian_heatmap(centres, (2, 20, 20))
    assert hm.shape == (2, 20, 20)
    assert hm[0, 10, 12] == pytest.approx(1.0) and hm[0, 10, 13] == pytest.approx(1.0)
    assert hm.max() <= 1.0  # overlapping particles do not add up
    assert hm[1, 3, 4] == pytest.approx(1.0)
    assert hm[1, 10, 12] == 0.0  # particles stay in their own image


def test_gaussian_heatmap_clips_particles_at_the_border():
    hm = gaussian_heatmap(torch.tensor([[0, 0.2, 19.6]]), (1, 20, 20))
    assert hm[0, 0, 19] > 0.8 and torch.isfinite(hm).all()


def test_balanced_bce_weights_both_classes_equally():
    target = torch.zeros(1, 50, 50)
    target[0, 25, 25] = 1.0
    # Predicting "empty" everywhere is cheap for plain BCE, not for the balanced one.
    empty = torch.full_like(target, -5.0)
    perfect = torch.where(target > 0, 5.0, -5.0)
    assert balanced_bce(empty, target) > 10 * balanced_bce(perfect, target)


def test_jensen_shannon_is_zero_for_equal_and_positive_otherwise():
    p = torch.softmax(torch.randn(4, 25), dim=1)
    assert jensen_shannon(p, p) == pytest.approx(0.0, abs=1e-6)
    q = torch.softmax(torch.randn(4, 25), dim=1)
    assert jensen_shannon(p, q) > 0


def test_local_terms_vanish_for_a_heatmap_matching_the_target():
    centres = torch.tensor([[0, 10.3, 20.7], [0, 30.0, 5.5]])
    logits = torch.log(gaussian_heatmap(centres, (1, 40, 40)) + 1e-12)
    js, euclid = local_terms(logits, centres)
    assert js < 1e-3
    # A 5 x 5 window truncates the Gaussian's tails, pulling the soft-argmax a few
    # hundredths of a pixel towards the window centre; the Euclidean term trains that out.
    assert euclid < 0.06


def test_detection_loss_decreases_when_training_a_free_heatmap():
    centres = torch.tensor([[0, 8.4, 9.6], [0, 20.0, 25.2]])
    logits = torch.zeros(1, 1, 32, 32, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    first = None
    for _ in range(150):
        loss, parts = detection_loss(logits, centres)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    assert parts["euclid"] < 0.1
    assert set(parts) == {"bce", "js", "euclid"}


def test_detection_loss_without_particles_is_finite():
    loss, parts = detection_loss(torch.zeros(2, 1, 16, 16, requires_grad=True),
                                 torch.zeros(0, 3))
    assert torch.isfinite(loss) and parts["js"] == 0.0
    loss.backward()


def test_papers_denoising_loss_prefers_the_closer_prediction_and_ignores_the_scale():
    from napari_denodet.core.losses import denoising_loss

    torch.manual_seed(0)
    clean = torch.zeros(2, 1, 32, 32)
    clean[:, :, 10:14, 10:14] = 8.0
    clean += 0.1 * torch.randn_like(clean)
    near = clean + 0.2 * torch.randn_like(clean)
    far = clean + 1.5 * torch.randn_like(clean)
    loss = lambda d, c: float(denoising_loss(d, c, "dice-bce"))  # noqa: E731
    assert loss(near, clean) < loss(far, clean)
    # Both images are mapped to [0, 1] by the clean patch's range: units do not matter.
    assert loss(3.0 * near + 5.0, 3.0 * clean + 5.0) == pytest.approx(loss(near, clean),
                                                                      rel=1e-4)


def test_unknown_denoising_loss_is_refused():
    from napari_denodet.core.losses import denoising_loss

    with pytest.raises(ValueError, match="unknown denoising loss"):
        denoising_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), "l2")


def test_blind_spot_mask_takes_values_from_neighbours():
    noisy = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 1, 32, 32)
    masked, mask = blind_spot_mask(noisy, 0.05, torch.Generator().manual_seed(0))
    assert 0 < mask.sum() < noisy.numel() * 0.1
    assert torch.equal(masked[~mask], noisy[~mask])
    assert not torch.any(masked[mask] == noisy[mask]), "a pixel replaced by itself"
    # Values are unique, so each replacement is found where it came from: within 2 px.
    b, _, y, x = mask.nonzero(as_tuple=True)
    source = masked[mask].long() - b * 32 * 32
    assert torch.all((source // 32 - y).abs() <= 2) and torch.all((source % 32 - x).abs() <= 2)


def test_pu_loss_does_not_punish_unlabelled_particles_at_the_prior():
    # Half the unlabelled pixels carry a particle the user did not click. Scoring them
    # high costs less under the PU risk with the right prior than when taken as background.
    logits = torch.full((1, 8, 8), -4.0)
    logits[0, :4] = 4.0  # the network says "particle" on the top half
    positive = torch.zeros(1, 8, 8, dtype=torch.bool)
    positive[0, 0, :2] = True
    nothing = torch.zeros_like(positive)
    with_prior = positive_unlabelled_loss(logits, positive, nothing, prior=0.5)
    as_background = positive_unlabelled_loss(logits, positive, nothing, prior=0.0)
    assert with_prior < 0.5 * as_background
    # A known negative where the network says "particle" raises the loss.
    negative = torch.zeros_like(positive)
    negative[0, 3, :] = True
    assert positive_unlabelled_loss(logits, positive, negative, 0.5) > with_prior
