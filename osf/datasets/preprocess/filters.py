"""Channel-specific filtering applied at the source rate, before resampling to 64 Hz.

EMG (chin, legs): surface EMG power lies mostly in 10-250 Hz, but the model sees 64 Hz, whose
Nyquist frequency is 32 Hz. OSF keeps the part of EMG that survives that rate: a zero-phase
4th-order Butterworth band-pass 10-30 Hz at the source rate (removing ECG/movement artefacts and
baseline drift below 10 Hz, and staying under the 32 Hz Nyquist so the resampler's anti-alias filter
does not cut into the band), then the polyphase resampler. Sources too slow for the full band get the
part they can carry: a 10 Hz high-pass when the rate is at most ~66 Hz, nothing below 30 Hz (recorded
in the QC report). Other channels are not filtered beyond the resampler's anti-alias low-pass.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt

EMG_BAND_HZ: tuple[float, float] = (10.0, 30.0)
EMG_FILTER_ORDER = 4
# A Butterworth edge needs some room below Nyquist to be stable and meaningful.
_EDGE_HEADROOM = 1.1


def _emg_design(rate: float) -> tuple[np.ndarray | None, str]:
    """The EMG filter (SOS, or None) that fits ``rate`` Hz and its description for the QC report."""
    low, high = EMG_BAND_HZ
    nyquist = rate / 2.0
    if nyquist > high * _EDGE_HEADROOM:
        sos = butter(EMG_FILTER_ORDER, (low, high), btype="bandpass", fs=rate, output="sos")
        return sos, f"butterworth{EMG_FILTER_ORDER} bandpass {low:g}-{high:g} Hz zero-phase"
    if nyquist > low * _EDGE_HEADROOM:
        sos = butter(EMG_FILTER_ORDER, low, btype="highpass", fs=rate, output="sos")
        return sos, (
            f"butterworth{EMG_FILTER_ORDER} highpass {low:g} Hz zero-phase (source rate {rate:g} Hz too low for {high:g} Hz)"
        )
    return None, f"none (source rate {rate:g} Hz too low for an EMG band)"


def emg_filter_description(rate: float) -> str:
    """Describe the EMG filter ``emg_bandpass`` applies at ``rate`` Hz (for the QC report)."""
    return _emg_design(rate)[1]


def emg_bandpass(x: np.ndarray, rate: float) -> np.ndarray:
    """Band-pass an EMG channel to ``EMG_BAND_HZ`` (or what ``rate`` allows), zero-phase."""
    sos = _emg_design(rate)[0]
    x = np.asarray(x, dtype=np.float64)
    # sosfiltfilt needs more samples than its padding; shorter inputs are left unfiltered.
    if sos is None or len(x) <= 3 * (2 * len(sos) + 1):
        return x
    return sosfiltfilt(sos, x)
