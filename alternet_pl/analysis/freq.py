"""Frequency-domain helpers: centred 2-D FFT, the square band mask and band-limited noise.

The one place for frequency masks: the Fourier analysis and the frequency-noise robustness both use
it. Conventions follow the official code (`ops/adversarial.py: FreqAttack`): after `fftshift`
frequency 0 sits at index ``n // 2``; the band of angular frequency ``f`` (radians) and half-width
``s`` (radians) is the centred square of side ``2 * floor((f + s) * n / (2 pi))`` minus the centred
square of side ``2 * floor((f - s) * n / (2 pi))``, both clipped to ``[0, n]``.

Units: ``f`` and ``s`` are added, so they share a unit, and the division by ``2 pi`` makes it
radians; ``s = 0.2`` rad is the official default (about 1 frequency bin at n = 32).
"""

from __future__ import annotations

import math

import torch

from alternet_pl.errors import InputError

__all__ = ["band_limit", "band_mask", "band_noise", "centered_fft2", "check_freq"]


def centered_fft2(x: torch.Tensor) -> torch.Tensor:
    """2-D FFT over the last two dims with frequency 0 moved to index ``(H // 2, W // 2)``."""
    return torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))


def check_freq(freq_pi: float) -> float:
    """Validate a band frequency given in units of pi (must lie in (0, 1]); return it in radians."""
    if not (0.0 < float(freq_pi) <= 1.0):
        raise InputError(
            f"frequency {freq_pi} (in units of pi) is outside (0, 1]: give band centres like "
            "0.1, 0.3, ..., 0.9 (meaning 0.1 pi .. 0.9 pi); 1.0 is the Nyquist frequency"
        )
    return float(freq_pi) * math.pi


def _half_side(freq: float, n: int) -> int:
    """Half the side of the centred square reaching angular frequency ``freq`` on an n-point axis."""
    return min(max(math.floor(freq * n / (2 * math.pi)), 0), n // 2)


def _square(n_h: int, n_w: int, r_h: int, r_w: int) -> torch.Tensor:
    mask = torch.zeros(n_h, n_w, dtype=torch.bool)
    c_h, c_w = n_h // 2, n_w // 2
    mask[c_h - r_h : c_h + r_h, c_w - r_w : c_w + r_w] = True
    return mask


def band_mask(size: int | tuple[int, int], freq: float, half_width: float = 0.2) -> torch.Tensor:
    """Boolean (H, W) mask of the square annulus around ``freq`` (radians) in a *centred* spectrum.

    ``half_width`` is in radians too. Non-square maps get a rectangle with the rule applied per axis.
    """
    n_h, n_w = (size, size) if isinstance(size, int) else size
    if half_width < 0:
        raise InputError(f"half_width must be >= 0 radians, got {half_width}")
    outer = _square(n_h, n_w, _half_side(freq + half_width, n_h), _half_side(freq + half_width, n_w))
    inner = _square(n_h, n_w, _half_side(freq - half_width, n_h), _half_side(freq - half_width, n_w))
    return outer & ~inner


def band_limit(x: torch.Tensor, freq: float, half_width: float = 0.2) -> torch.Tensor:
    """Keep only the band around ``freq`` (radians) of ``x`` (..., H, W); return the real part.

    Equivalent to the official "keep the masked amplitude, keep the phase": |X| M e^{i angle X} = X M.
    The real part symmetrises the (not point-symmetric) even-sided square, so the result's spectrum
    lies in the mask united with its reflection through frequency 0.
    """
    mask = band_mask(tuple(x.shape[-2:]), freq, half_width).to(x.device)
    spec = centered_fft2(x) * mask
    return torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real.to(x.dtype)


def band_noise(
    shape: tuple[int, ...],
    freq: float,
    half_width: float = 0.2,
    eps: float = 0.007,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Band-limited sign noise: ``band_limit(eps * sign(N(0, 1)), freq, half_width)`` on the CPU."""
    noise = eps * torch.randn(shape, generator=generator).sign()
    return band_limit(noise, freq, half_width)
