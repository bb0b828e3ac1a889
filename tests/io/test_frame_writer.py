"""The lal/lalframe frame writer makes what gwpy's writer makes: samples, types, times, units."""

from __future__ import annotations

import numpy as np
import pytest

from glitchflow.io.frame_writer import lal_unit_string, write_frame
from glitchflow.io.frames import frame_channels


@pytest.mark.parametrize(
    ("unit", "lal"),
    [
        ("strain", "strain"),
        ("m", "m"),
        ("T", "kg s^-2 A^-1"),
        ("m/s^2", "m s^-2"),
        ("m/s", "m s^-1"),
        ("counts", "count"),
        ("Hz", "s^-1"),
        ("m**2 / kg**4", "m^2 kg^-4"),
        (None, ""),
    ],
)
def test_units_decompose_to_lal_base_units_as_gwpy_does(unit, lal):
    from gwpy.utils.lal import to_lal_unit

    assert lal_unit_string(unit) == lal
    assert str(to_lal_unit(unit or "")[0]) == lal


def test_an_unknown_unit_or_sample_type_names_the_channel(tmp_path):
    with pytest.raises(ValueError, match=r"V1:X.*furlong"):
        write_frame(tmp_path / "a.gwf", 1e9, {"V1:X": (np.zeros(16), 16.0)}, {"V1:X": "furlong"})
    with pytest.raises(ValueError, match=r"V1:Y.*bool"):
        write_frame(tmp_path / "b.gwf", 1e9, {"V1:Y": (np.zeros(16, bool), 16.0)})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_frames_read_back_in_gwpy_with_samples_types_times_and_units(tmp_path):
    from gwpy.timeseries import TimeSeries

    rng = np.random.default_rng(3)
    channels = {
        "V1:STRAIN": (rng.normal(size=4 * 4096) * 1e-21, 4096.0),
        "V1:ACC": (rng.normal(size=4 * 512).astype(np.float32), 512.0),
        "V1:STATE": (np.arange(4 * 16, dtype=np.int32), 16.0),
    }
    units = {"V1:STRAIN": "strain", "V1:ACC": "m/s^2", "V1:STATE": "counts"}
    path = tmp_path / "V-TEST-1000000000-4.gwf"
    write_frame(path, 1000000000, channels, units)
    assert sorted(frame_channels(path)) == sorted(channels)
    for name, (data, rate) in channels.items():
        got = TimeSeries.read(str(path), name)
        assert got.dtype == data.dtype
        assert got.t0.value == 1000000000 and got.sample_rate.value == rate
        np.testing.assert_array_equal(got.value, data)
        assert got.unit == TimeSeries([1], unit=units[name]).unit.decompose()
