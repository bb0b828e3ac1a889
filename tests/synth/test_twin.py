"""Physics checks of the detector twin against its own truth and the design PSD."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt, welch

from glitchflow.config import load_config
from glitchflow.io.frames import find_frames, read_frame
from glitchflow.io.span import read_span
from glitchflow.io.truth import TRUTH_COLUMNS, read_truth, true_witness_channels
from glitchflow.synth.noise import strain_psd
from glitchflow.synth.population import FAMILIES
from glitchflow.synth.twin import DetectorTwin, generate
from tests.conftest import CONFIGS


def _channels(result):
    frames = find_frames(result.frames)
    return frames.frames


def test_twin_writes_named_contiguous_frames_and_truth(tiny_twin, tiny_config):
    names = [p.name for p in tiny_twin.frames]
    assert names == [
        "V-V1_GLITCHFLOW_TWIN-1400000000-32.gwf",
        "V-V1_GLITCHFLOW_TWIN-1400000032-32.gwf",
    ]
    truth = read_truth(tiny_twin.truth_path)
    assert list(truth.columns) == TRUTH_COLUMNS
    assert set(truth["family"]) == {
        "blip",
        "scattered_light",
        "environmental",
        "unwitnessed",
        "witness_only",
        "decoy",
    }
    assert (truth.loc[truth.family == "unwitnessed", "witnesses"] == "").all()
    assert (truth.loc[truth.family.isin(["witness_only", "decoy"]), "strain_snr"] == 0).all()
    assert true_witness_channels(truth) == {
        "V1:LSC_DARM_CORR",
        "V1:Sa_NE_F0_Z_500Hz",
        "V1:ENV_CEB_MAG_N",
    }
    assert tiny_twin.truth_path.with_suffix(".parquet").is_file()


def test_channels_have_mixed_rates(tiny_twin, tiny_config):
    frame = _channels(tiny_twin)[0]
    names = [tiny_config.signal.strain_channel] + [c.name for c in tiny_config.twin.channels]
    data = read_frame(frame, names)
    rates = {n: d[1] for n, d in data.items()}
    assert rates["V1:Hrec_hoft_16384Hz"] == 16384
    assert min(rates.values()) == 256 and max(rates.values()) == 16384
    assert len(names) >= 13
    for _name, (x, rate, t0) in data.items():
        assert len(x) == 32 * rate and t0 == 1400000000


def _arrays(result, names):
    span = read_span(_channels(result), names)
    assert len(span.segments) == 1
    return span.segments[0].data


def test_same_seed_same_data_different_seed_different(tmp_path, tiny_config, tiny_twin):
    again = generate(tiny_config, tmp_path / "again", progress=False)
    other = generate(tiny_config.model_copy(update={"seed": 99}), tmp_path / "other", False)
    names = ["V1:Hrec_hoft_16384Hz", "V1:LSC_DARM_CORR", "V1:ENV_NEB_SEIS_N"]
    for k in range(2):
        first = read_frame(_channels(tiny_twin)[k], names)
        second = read_frame(_channels(again)[k], names)
        third = read_frame(_channels(other)[k], names)
        for name in names:
            # GWF files embed a creation-time history record; the sample bytes must match.
            assert first[name][0].tobytes() == second[name][0].tobytes()
            assert abs(np.corrcoef(first[name][0], third[name][0])[0, 1]) < 0.1
    assert tiny_twin.truth_path.read_bytes() == again.truth_path.read_bytes()
    assert tiny_twin.truth_path.read_bytes() != other.truth_path.read_bytes()


def test_strain_psd_matches_design_between_10_and_1000_hz(tiny_config):
    quiet = [f"twin.families.{f}.rate=0" for f in FAMILIES]
    cfg = load_config(CONFIGS / "demo.yaml", ["twin.duration=128", *quiet])
    frames = list(DetectorTwin(cfg).frames())
    strain = np.concatenate([data[cfg.signal.strain_channel] for _, data, _ in frames])
    freqs, measured = welch(strain, fs=16384, nperseg=4 * 16384, average="median")
    design = strain_psd(cfg.twin.strain_psd, cfg.twin.psd_low_frequency)(freqs)
    edges = np.geomspace(10, 1000, 15)
    ratios = np.array(
        [
            np.median(measured[(freqs >= lo) & (freqs < hi)] / design[(freqs >= lo) & (freqs < hi)])
            for lo, hi in itertools.pairwise(edges)
        ]
    )
    # 128 s, 4 s median-averaged Welch: median PSD ratio in each log band within 10% of design
    assert np.all(np.abs(ratios - 1) < 0.10), ratios


def _isolated(truth, family, gap=1.0):
    """The strongest glitch of a family with no comparable strain glitch within ``gap`` s."""
    inner = truth[(truth.gps_peak > 1400000008) & (truth.gps_peak < 1400000056)]
    loud = truth[truth.strain_snr > 0]
    rows = []
    for _, row in inner[inner.family == family].iterrows():
        near = (loud.gps_peak - row.gps_peak).abs() < gap + row.duration
        others = loud[(loud.id != row.id) & near & (loud.strain_snr > row.strain_snr / 3)]
        if others.empty:
            rows.append(row)
    assert rows, f"no isolated {family} glitch in the tiny twin"
    return max(rows, key=lambda r: r.strain_snr)


def _qpeak(x, rate, t0, center, frange):
    from gwpy.timeseries import TimeSeries

    ts = TimeSeries(x, t0=t0, sample_rate=rate)
    q = ts.q_transform(
        qrange=(4, 64), frange=frange, outseg=(center - 0.5, center + 0.5), whiten=True
    )
    i, j = np.unravel_index(np.argmax(q.value), q.shape)
    return float(q.times.value[i]), float(q.frequencies.value[j]), float(q.value[i, j])


@pytest.mark.parametrize("family", ["blip", "environmental", "unwitnessed"])
def test_injected_glitch_appears_at_catalogued_time_and_frequency(tiny_twin, tiny_config, family):
    row = _isolated(read_truth(tiny_twin.truth_path), family)
    strain_name = tiny_config.signal.strain_channel
    names = [strain_name] + ([row.witnesses] if row.witnesses else [])
    data = _arrays(tiny_twin, names)
    rates = {strain_name: 16384.0} | {c.name: c.sample_rate for c in tiny_config.twin.channels}
    lo = max(10.0, row.frequency / 3)
    t, f, energy = _qpeak(data[strain_name], 16384, 1400000000, row.gps_peak, (lo, 1000))
    assert abs(t - row.gps_peak) < max(0.03, row.duration / 2)
    expected_f = row.frequency
    if family == "environmental":  # the low-pass coupling pulls the peak down a little
        assert expected_f / 2 < f < expected_f * 1.3
    else:
        assert abs(np.log(f / expected_f)) < np.log(1.3)
    assert energy > 10
    if row.witnesses:
        rate = rates[row.witnesses]
        tw, fw, _ew = _qpeak(
            data[row.witnesses], rate, 1400000000, row.gps_peak, (lo, min(1000, rate / 2.2))
        )
        assert abs(tw - row.gps_peak) < max(0.03, row.duration / 2)
        assert abs(np.log(fw / expected_f)) < np.log(1.3)


def test_scattered_light_arch_in_strain_and_motion_in_witness():
    others = [f"twin.families.{f}.rate=0" for f in FAMILIES if f != "scattered_light"]
    cfg = load_config(
        CONFIGS / "demo.yaml",
        [
            "twin.duration=64",
            "twin.families.scattered_light.rate=0.05",
            "seed=1",
            *others,
        ],
    )
    twin = DetectorTwin(cfg)
    frames = list(twin.frames())
    strain_name = cfg.signal.strain_channel
    witness = cfg.twin.families.scattered_light.witness
    strain = np.concatenate([data[strain_name] for _, data, _ in frames])
    motion = np.concatenate([data[witness] for _, data, _ in frames])
    glitch = max(
        (g for g in twin.glitches if 1400000006 < g.gps_peak < 1400000058),
        key=lambda g: g.strain_snr,
    )
    t, f, energy = _qpeak(strain, 16384, 1400000000, glitch.gps_peak, (10, glitch.frequency * 1.5))
    assert abs(t - glitch.gps_peak) < glitch.duration / 2
    assert 10 <= f <= glitch.frequency * 1.3
    assert energy > 10
    # the witness records the slow motion that drives the arch: in the motion band
    # (1-5 Hz) its RMS over the arch stands well above the quiet data
    sos = butter(4, [1.0, 5.0], btype="bandpass", fs=500, output="sos")
    band = sosfiltfilt(sos, motion)
    i = int((glitch.gps_peak - 1400000000) * 500)
    half = int(glitch.duration * 250)
    quiet = np.median([np.std(band[k : k + 2 * half]) for k in range(500, len(band) - 500, 500)])
    assert np.std(band[i - half // 2 : i + half // 2]) > 3 * quiet


def test_configured_gaps_leave_frames_out_and_truth_follows(tmp_path):
    quiet = [f"twin.families.{f}.rate=0.05" for f in FAMILIES]
    cfg = load_config(
        CONFIGS / "demo.yaml",
        [
            "twin.duration=96",
            "twin.frame_duration=32",
            "twin.gaps=[[1400000032, 1400000064]]",
            *quiet,
        ],
    )
    result = generate(cfg, tmp_path, progress=False)
    assert [p.name for p in result.frames] == [
        "V-V1_GLITCHFLOW_TWIN-1400000000-32.gwf",
        "V-V1_GLITCHFLOW_TWIN-1400000064-32.gwf",
    ]
    truth = read_truth(result.truth_path)
    assert not ((truth.gps_peak >= 1400000032) & (truth.gps_peak < 1400000064)).any()
    span = read_span(find_frames(tmp_path / "frames").frames, ["V1:Hrec_hoft_16384Hz"])
    assert span.gaps == [(1400000032.0, 1400000064.0)]


def test_live_twin_paces_frames_and_writes_the_same_data(tmp_path, tiny_config):
    """``synth --realtime``: frame k is written after (k + 1) d / speed wall seconds, each
    renamed into place, with the same samples and truth as the batch twin."""
    import threading
    import time

    from glitchflow.synth.live import stream

    cfg = load_config(
        CONFIGS / "demo.yaml", ["seed=2", "twin.frame_duration=1", "twin.duration=10"]
    )
    frames_dir = tmp_path / "live" / "frames"
    appeared: dict[str, float] = {}
    done = threading.Event()

    def look():
        if frames_dir.is_dir():
            for path in frames_dir.glob("*.gwf"):
                appeared.setdefault(path.name, time.perf_counter())

    def watch():  # what a reader of the directory sees, and when
        while not done.is_set():
            look()
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    result = stream(cfg, tmp_path / "live", speed=10.0, progress=False)
    done.set()
    watcher.join()
    look()
    assert len(result.frames) == 10 and result.wall_seconds >= 10 / 10.0
    names = sorted(p.name for p in result.frames)
    assert sorted(appeared) == names  # no temporary name was ever visible as a .gwf
    for k, name in enumerate(names):
        assert appeared[name] - t0 >= (k + 1) / 10.0 - 0.01
    batch = generate(cfg, tmp_path / "batch", progress=False)
    channels = ["V1:Hrec_hoft_16384Hz", "V1:LSC_DARM_CORR"]
    for live_frame, batch_frame in zip(
        find_frames(frames_dir).frames, find_frames(batch.frames[0].parent).frames
    ):
        a, b = read_frame(live_frame, channels), read_frame(batch_frame, channels)
        for name in channels:
            np.testing.assert_array_equal(a[name][0], b[name][0])
    assert result.truth_path.read_text() == batch.truth_path.read_text()
