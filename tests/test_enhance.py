"""vcar-enhance end to end on videos made here with PyAV: time stamps, frame rate, audio, colour and
rotation kept; 10-bit and odd sizes; the stream's QP read; tiles equal whole frames; bad input."""

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from tests.conftest import REPO, perturb_weights
from vcar_tf.cli.enhance import main
from vcar_tf.video.stream import fill_plane, plane_array

RUN = os.path.join(REPO, "tests", "legacy", "run_arcnn")


def make_video(path, width=40, height=32, frames=12, fps=50, codec="libx264", pix_fmt="yuv420p",
               options=None, audio=True, rotation=0, seed=0, subtitles=False, sar=None):
    """A video of smooth moving content (so codecs and models have something real to do) with,
    optionally, a stereo AAC track as long as the video and two SubRip subtitles; returns the luma
    planes written."""
    out = av.open(path, "w")
    video = out.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, pix_fmt
    video.options = options if options is not None else {"qp": "30"}
    ctx = video.codec_context
    ctx.color_primaries = ctx.color_trc = ctx.colorspace = 1  # BT.709
    if rotation:
        video.set_display_rotation(rotation)
    if sar:
        ctx.sample_aspect_ratio = sar
    if audio:
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "stereo"
    if subtitles:
        subs = out.add_mux_stream("subrip")
        subs.time_base = Fraction(1, 1000)
    deep = pix_fmt.endswith("10le")
    dtype, top = (np.uint16, 1023) if deep else (np.uint8, 255)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    lumas = []
    for t in range(frames):
        frame = av.VideoFrame(width, height, pix_fmt)
        y = (0.5 + 0.4 * np.sin((xx + 2 * t) / 5.0) * np.cos(yy / 4.0)) * top + rng.normal(0, top / 50, yy.shape)
        y = np.clip(np.round(y), 0, top).astype(dtype)
        lumas.append(y)
        fill_plane(frame.planes[0], y)
        for p in frame.planes[1:]:
            fill_plane(p, rng.integers(top // 4, 3 * top // 4, (p.height, p.width)).astype(dtype))
        frame.pts, frame.time_base = t, Fraction(1, fps)
        for pkt in video.encode(frame):
            out.mux(pkt)
    for pkt in video.encode():
        out.mux(pkt)
    for i, text in enumerate((b"first", b"second") if subtitles else ()):
        pkt = av.Packet(text)
        pkt.stream, pkt.time_base, pkt.pts, pkt.dts, pkt.duration = subs, Fraction(1, 1000), 40 * i, 40 * i, 40
        out.mux(pkt)
    if audio:
        samples = 48000 * frames // fps
        for i in range(0, samples, 1024):
            block = av.AudioFrame.from_ndarray((0.1 * rng.standard_normal((2, 1024))).astype(np.float32),
                                               format="fltp", layout="stereo")
            block.sample_rate, block.pts, block.time_base = 48000, i, Fraction(1, 48000)
            for pkt in sound.encode(block):
                out.mux(pkt)
        for pkt in sound.encode():
            out.mux(pkt)
    out.close()
    return lumas


def packets(path, kind):
    with av.open(path) as c:
        return [(p.pts, p.duration, bytes(p)) for p in c.demux(**{kind: 0}) if p.size]


def decode(path):
    """(video stream facts, [(pts, y, u, v, rotation)], audio packets [(pts, bytes)])."""
    with av.open(path) as c:
        v = c.streams.video[0]
        ctx = v.codec_context
        facts = {"rate": v.average_rate, "time_base": v.time_base, "pix_fmt": ctx.format.name,
                 "size": (ctx.width, ctx.height), "colour": (ctx.color_primaries, ctx.colorspace, ctx.color_trc),
                 "sar": ctx.sample_aspect_ratio,
                 "duration": c.duration, "streams": [s.type for s in c.streams]}
        dtype = np.uint16 if facts["pix_fmt"].endswith("10le") else np.uint8
        frames = [(f.pts, *(plane_array(p, dtype) for p in f.planes), f.rotation) for f in c.decode(video=0)]
    with av.open(path) as c:
        audio = [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.size] if c.streams.audio else []
    return facts, frames, audio


def expected_luma(model, radius, lumas, top):
    from vcar_tf.inference.streaming import enhance_frames

    return [np.round(y * top).astype(l.dtype)
            for y, l in zip(enhance_frames(model, (l.astype(np.float32) / top for l in lumas), radius), lumas)]


@pytest.fixture(scope="module")
def arcnn_run():
    from vcar_tf.train.run import load_run

    return load_run(RUN)[0]


def test_50fps_mp4_keeps_time_stamps_audio_colour_rotation(tmp_path, arcnn_run):
    src, out = str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4")
    make_video(src, rotation=90, sar=Fraction(32, 27))  # an anamorphic picture
    assert main([src, out, "--model_dir", RUN, "--no_progress"]) == 0
    facts_in, frames_in, audio_in = decode(src)
    facts_out, frames_out, audio_out = decode(out)
    assert facts_out["rate"] == Fraction(50) and facts_out["duration"] == facts_in["duration"]
    assert facts_out["streams"] == ["video", "audio"] and facts_out["colour"] == facts_in["colour"]
    assert facts_out["sar"] == facts_in["sar"] == Fraction(32, 27)
    assert [f[0] for f in frames_out] == [f[0] for f in frames_in]  # every pts, in display order
    assert [f[4] for f in frames_out] == [f[4] for f in frames_in] == [90] * len(frames_in)
    assert audio_out == audio_in and len(audio_in) > 5  # copied packet for packet
    want = expected_luma(arcnn_run, 0, [f[1] for f in frames_in], 255)
    for (_, y, u, v, _), (_, _, u_in, v_in, _), w in zip(frames_out, frames_in, want):
        np.testing.assert_array_equal(y, w)  # lossless by default
        np.testing.assert_array_equal(u, u_in)  # chroma passes through
        np.testing.assert_array_equal(v, v_in)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mp4"]  # no temp file left


def test_mkv_keeps_subtitles_and_audio_and_mp4_refuses_srt(tmp_path, capsys):
    src = str(tmp_path / "in.mkv")
    make_video(src, frames=4, fps=30, codec="ffv1", options={}, subtitles=True)
    assert main([src, str(tmp_path / "out.mkv"), "--model_dir", RUN, "--no_progress", "--codec", "ffv1"]) == 0
    for kind in ("subtitles", "audio"):
        assert packets(str(tmp_path / "out.mkv"), kind) == packets(src, kind) != []
    assert decode(str(tmp_path / "out.mkv"))[0]["streams"] == decode(src)[0]["streams"] == ["video", "audio", "subtitle"]
    assert "cannot hold the input's subtitle stream #2" in _error(capsys, [src, str(tmp_path / "o.mp4"), "--model_dir", RUN])


def test_10_bit_odd_size_round_trip(tmp_path, arcnn_run):
    src, out = str(tmp_path / "in.mkv"), str(tmp_path / "out.mkv")
    make_video(src, width=33, height=21, frames=6, fps=24, codec="ffv1", pix_fmt="yuv420p10le", options={}, audio=False)
    assert main([src, out, "--model_dir", RUN, "--codec", "ffv1", "--no_progress"]) == 0
    facts_in, frames_in, _ = decode(src)
    facts_out, frames_out, _ = decode(out)
    assert facts_out["pix_fmt"] == "yuv420p10le" and facts_out["size"] == (33, 21) and facts_out["rate"] == 24
    assert max(int(f[1].max()) for f in frames_in) > 255  # the input really uses 10 bits
    want = expected_luma(arcnn_run, 0, [f[1] for f in frames_in], 1023)
    for (_, y, u, _, _), (_, _, u_in, _, _), w in zip(frames_out, frames_in, want):
        assert y.shape == (21, 33) and u.shape == (11, 17)
        np.testing.assert_array_equal(y, w)
        np.testing.assert_array_equal(u, u_in)
    y4m = str(tmp_path / "out.y4m")  # raw frames: no time stamps, the rate in the header
    assert main([src, y4m, "--model_dir", RUN, "--no_progress"]) == 0
    facts_y4m, frames_y4m, _ = decode(y4m)
    assert (facts_y4m["rate"], facts_y4m["pix_fmt"]) == (24, "yuv420p10le")
    np.testing.assert_array_equal(np.stack([f[1] for f in frames_y4m]), np.stack(want))


def test_stream_qp_is_read_from_x264_and_x265_at_a_known_qp(tmp_path):
    from vcar_tf.video.stream import read_stream_qp

    for codec, options, qp in (("libx264", {"qp": "32"}, 32), ("libx265", {"x265-params": "qp=27:log-level=error"}, 27)):
        path = str(tmp_path / f"{codec}.mkv")
        make_video(path, width=64, height=48, frames=4, codec=codec, options=options, audio=False)
        got, how = read_stream_qp(path)
        assert got == qp, how
    crf = str(tmp_path / "crf.mp4")
    make_video(crf, width=64, height=48, frames=4, codec="libx265", options={"x265-params": "crf=28:log-level=error"},
               audio=False)
    got, how = read_stream_qp(crf)
    assert got is None and "crf" in how


def test_stream_qp_from_h264_video_enc_params_where_no_settings_say_it(tmp_path, monkeypatch):
    from vcar_tf.video import stream

    path = str(tmp_path / "x264.mkv")
    make_video(path, width=64, height=48, frames=4, codec="libx264", options={"qp": "32"}, audio=False)
    monkeypatch.setattr(stream, "_constant_qp", lambda settings: None)  # as for a stream without them
    got, how = stream.read_stream_qp(path)
    assert got == 32 and "video_enc_params" in how, how


def test_the_preset_nearest_to_the_stream_qp_is_chosen(tmp_path, monkeypatch, capsys):
    import json
    from types import SimpleNamespace

    from vcar_tf.cli.enhance import choose_preset

    for name, qp in (("a_qp27", 27), ("b_qp37", 37)):
        (tmp_path / "p" / name).mkdir(parents=True)
        (tmp_path / "p" / name / "card.json").write_text(json.dumps({"model": "arcnn", "qp": qp}))
    monkeypatch.setenv("VCAR_TF_PRESETS", str(tmp_path / "p"))
    src = SimpleNamespace(path=str(tmp_path / "in.mp4"))
    make_video(src.path, width=64, height=48, frames=3, options={"qp": "29"}, audio=False)
    assert choose_preset(SimpleNamespace(input_qp=None), src) == "a_qp27"
    assert "QP 29" in capsys.readouterr().out
    assert choose_preset(SimpleNamespace(input_qp=40), src) == "b_qp37"
    # two presets at the stream's QP: the one with the better val ΔPSNR, whatever the names
    (tmp_path / "p" / "0_qp37").mkdir()
    (tmp_path / "p" / "0_qp37" / "card.json").write_text(json.dumps({"model": "arcnn", "qp": 37, "val": {"delta_psnr": 0.01}}))
    (tmp_path / "p" / "b_qp37" / "card.json").write_text(json.dumps({"model": "arcnn", "qp": 37, "val": {"delta_psnr": 0.2}}))
    assert choose_preset(SimpleNamespace(input_qp=40), src) == "b_qp37"


def test_every_model_has_a_reach_or_is_known_to_see_the_whole_frame():
    from vcar_tf import models
    from vcar_tf.inference.tiling import BYTES_PER_PIXEL, RECEPTIVE_RADIUS, WHOLE_FRAME

    assert sorted([*RECEPTIVE_RADIUS, *WHOLE_FRAME]) == sorted(models.names()) == sorted(BYTES_PER_PIXEL)


@pytest.mark.parametrize("name", ["arcnn", "dncnn", "stifn_r3"])
def test_receptive_radius_table_covers_the_measured_reach(name):
    from vcar_tf import models
    from vcar_tf.inference.streaming import frame_step
    from vcar_tf.inference.tiling import RECEPTIVE_RADIUS, default_overlap, receptive_radius

    reach = receptive_radius(frame_step(perturb_weights(models.build(name))), 2 * models.spec(name).radius + 1, size=64)
    assert 0 < reach <= RECEPTIVE_RADIUS[name] <= default_overlap(name)


@pytest.mark.parametrize("name,size,tile", [("arcnn", (70, 90), 24), ("stdf_r3", (72, 88), 24)])
def test_tiled_equals_untiled_and_too_little_overlap_does_not(name, size, tile):
    from vcar_tf import models
    from vcar_tf.inference.streaming import enhance_frames
    from vcar_tf.inference.tiling import default_overlap

    model, radius = perturb_weights(models.build(name), scale=0.02), models.spec(name).radius
    rng = np.random.default_rng(0)
    frames = [rng.random(size, dtype=np.float32) for _ in range(3)]
    whole = np.stack(list(enhance_frames(model, frames, radius)))
    tiled = np.stack(list(enhance_frames(model, frames, radius, tile=tile, overlap=default_overlap(name))))
    assert np.abs(tiled - whole).max() < 1e-5
    cut = np.stack(list(enhance_frames(model, frames, radius, tile=tile, overlap=0)))
    assert np.abs(cut - whole).max() > 1e-3  # the control: without context the seams show


def test_tiles_through_the_command_and_saved_model(tmp_path):
    import keras

    from vcar_tf import models
    from vcar_tf.export import export_saved_model

    model = perturb_weights(models.build("arcnn"), scale=0.02)
    saved = export_saved_model(model, 0, str(tmp_path / "arcnn"))
    src = str(tmp_path / "in.mkv")
    lumas = make_video(src, width=64, height=48, frames=4, fps=30, audio=False, options={"qp": "0"})
    outs = {}
    for label, extra in (("whole", []), ("tiled", ["--tile", "16"])):
        outs[label] = str(tmp_path / f"{label}.mkv")
        assert main([src, outs[label], "--saved_model", saved, "--no_progress", *extra]) == 0
    whole, tiled = (np.stack([f[1] for f in decode(outs[k])[1]]) for k in ("whole", "tiled"))
    np.testing.assert_array_equal(whole, tiled)
    assert not np.array_equal(whole, np.stack(lumas))  # the model did change the video
    keras.backend.clear_session()


def _error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_is_one_error_line_and_leaves_no_file(tmp_path, capsys):
    good = str(tmp_path / "good.mp4")
    make_video(good, frames=3, audio=False)
    before = open(good, "rb").read()
    link = str(tmp_path / "link.mp4")
    os.symlink(good, link)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2000))
    (tmp_path / "empty_40x32.yuv").write_bytes(b"")
    (tmp_path / "short_40x32_5.yuv").write_bytes(b"\x80" * (40 * 32 * 3 // 2 * 3))
    make_video(str(tmp_path / "c444.mkv"), frames=2, codec="ffv1", pix_fmt="yuv444p", options={}, audio=False)
    make_video(str(tmp_path / "odd.mkv"), width=33, height=21, frames=2, codec="ffv1", options={}, audio=False)
    out = str(tmp_path / "out" / "o.mp4")
    (tmp_path / "folder.mp4").mkdir()
    cases = [([good, link], "is the input file"),
             ([str(tmp_path / "folder.mp4"), out], "is a folder, not a video file"),
             ([str(tmp_path / "empty_40x32.yuv"), out, "--fps", "0"], "--fps 0: give a positive frame rate"),
             ([good, out, "--fps", "nan"], "--fps nan: give a positive frame rate"),
             ([link, good], "is the input file"),
             ([str(junk), out], "cannot decode"),
             ([str(tmp_path / "empty_40x32.yuv"), out], "zero frames"),
             ([str(tmp_path / "short_40x32_5.yuv"), out], "the name says 5 frames, the file holds 3"),
             ([str(tmp_path / "c444.mkv"), out], "pixel format yuv444p"),
             ([str(tmp_path / "odd.mkv"), out], "odd sizes"),
             ([good, str(tmp_path / "o.xyz")], "unknown output extension"),
             ([good, out, "--codec", "nope264"], "unknown codec"),
             ([good, str(tmp_path / "o.webm")], "webm cannot hold libx264"),
             ([good, out, "--qp", "60"], "--qp must be in 0..51"),
             ([good, out, "--codec", "mpeg4", "--crf", "18"], "mpeg4 has no option crf, so it would ignore"),
             ([good, out, "--crf", "20", "--qp", "20"], "at most one of"),
             ([good, str(junk)], "exists; pass --overwrite"),
             ([good, out, "--width", "40"], "--width describe a raw .yuv"),
             ([good, out, "--pix_fmt", "yuv420p10le", "--fps", "30"], "--pix_fmt, --fps describe a raw .yuv"),
             ([good, str(tmp_path / "o.yuv"), "--crf", "16"], "is raw video, stored without encoding: --crf would"),
             ([good, str(tmp_path / "o.y4m"), "--codec", "libx265", "--qp", "20"], "--codec, --qp would not apply")]
    for argv, message in cases:
        assert message in _error(capsys, [*argv, "--model_dir", RUN, "--no_progress"]), argv
    assert open(good, "rb").read() == before and os.path.islink(link)
    assert sorted(os.listdir(tmp_path)) == ["c444.mkv", "empty_40x32.yuv", "folder.mp4", "good.mp4", "junk.mp4",
                                            "link.mp4", "odd.mkv", "short_40x32_5.yuv"]


def test_raw_10_bit_yuv_of_odd_size_in_and_out(tmp_path, arcnn_run):
    rng = np.random.default_rng(1)
    w, h, n = 33, 21, 3
    planes = [[rng.integers(0, 1024, shape).astype("<u2") for shape in ((h, w), (11, 17), (11, 17))] for _ in range(n)]
    src, out = tmp_path / "in_33x21.yuv", tmp_path / "out.yuv"
    src.write_bytes(b"".join(p.tobytes() for frame in planes for p in frame))
    assert main([str(src), str(out), "--model_dir", RUN, "--pix_fmt", "yuv420p10le", "--no_progress",
                 "--width", "33", "--height", "21"]) == 0
    got = np.frombuffer(out.read_bytes(), "<u2").reshape(n, -1)
    want = expected_luma(arcnn_run, 0, [f[0] for f in planes], 1023)
    for t in range(n):
        np.testing.assert_array_equal(got[t, : w * h].reshape(h, w), want[t])
        np.testing.assert_array_equal(got[t, w * h:], np.concatenate([planes[t][1].ravel(), planes[t][2].ravel()]))


@pytest.mark.parametrize("tile,overlap", [(16, 8), (8, 16), (8, 24)])
def test_tiles_share_one_recurrent_state_of_the_previous_frame(tile, overlap):
    """A toy recurrent model whose state is the frame itself shifted by one frame (its output: the
    previous frame's pixel, read from the state at the same place). Tiled, every tile must read the
    previous frame's state over its whole context, neighbours' cores included, never the state of
    the frame being enhanced: so tiled output equals untiled output exactly, padding included, also
    where the overlap spans more than one row of tiles above."""
    from vcar_tf.inference.tiling import TiledState, tiled_step

    def step(window, state):
        frame = window[:, 0, ..., 0]  # (1, h, w)
        h, w = frame.shape[1:]
        padded = np.pad(frame, ((0, 0), (0, -h % 8), (0, -w % 8)), mode="edge")[..., None]
        previous = np.zeros_like(padded) if state is None else np.asarray(state)
        # each output pixel: the previous frame's value averaged over a 3x3 neighbourhood
        blurred = sum(np.roll(np.roll(previous, dy, 1), dx, 2) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        return blurred[:, :h, :w], padded

    rng = np.random.default_rng(0)
    frames = [rng.random((1, 1, 37, 45, 1), np.float32) for _ in range(4)]
    run, state, whole = tiled_step(step, tile, overlap), None, None
    for t, x in enumerate(frames):
        out, state = run(x, state)
        want, whole = step(x, whole)
        assert isinstance(state, TiledState) and state.array.shape == (1, 40, 48, 1)
        # the cores' borders see their neighbours' state; only np.roll's wrap at the tile's context
        # edge differs, and an overlap of 8 pixels or more keeps it out of every core
        np.testing.assert_array_equal(out[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1])
        np.testing.assert_array_equal(state.array, whole)


def test_frames_over_a_saved_model_limit_are_tiled_to_fit(capsys):
    from types import SimpleNamespace

    from vcar_tf.cli.enhance import fit_export_limit
    from vcar_tf.errors import VcarError
    from vcar_tf.export.names import MAX_FRAME_PIXELS
    from vcar_tf.inference.tiling import tile_within_pixels

    uhd = SimpleNamespace(width=3840, height=2160)
    saved_model, keras_model = SimpleNamespace(max_frame_pixels=MAX_FRAME_PIXELS), SimpleNamespace()
    tile = fit_export_limit(saved_model, uhd, None, 64)
    assert tile % 8 == 0 and (tile + 128) ** 2 <= MAX_FRAME_PIXELS < (tile + 136) ** 2
    assert "3840x2160 frames are over the export's 4096000 pixels a call: tiles of" in capsys.readouterr().out
    assert fit_export_limit(keras_model, uhd, None, 64) is None  # no limit
    assert fit_export_limit(saved_model, SimpleNamespace(width=2560, height=1600), None, 64) is None  # at the limit
    assert tile_within_pixels(MAX_FRAME_PIXELS, 2160, 3840, 512, 60) == 512  # a --tile that fits is kept
    assert tile_within_pixels(MAX_FRAME_PIXELS, 1000, 9000, 4000, 0) == 4000  # cut by the frame's height
    with pytest.raises(VcarError, match="--tile 3000 with 64 px overlap makes model calls of more than 4096000 "
                                        "pixels, the export's limit: --tile 1888 or less"):
        tile_within_pixels(MAX_FRAME_PIXELS, 2160, 3840, 3000, 64)
    # a tile that --max_memory chose is made to fit, never refused; one that fits is kept
    assert fit_export_limit(saved_model, uhd, 2144, 64, chosen=True) == 1888
    assert fit_export_limit(saved_model, uhd, 512, 64, chosen=True) == 512
    assert fit_export_limit(saved_model, SimpleNamespace(width=832, height=480), None, 64, chosen=True) is None


def test_max_memory_picks_a_tile_or_refuses(tmp_path, capsys, monkeypatch):
    from vcar_tf.inference import tiling

    monkeypatch.setattr(tiling, "process_rss_bytes", lambda: 2**30)
    assert tiling.plan_for_memory(64 * 2**30, "stdf_r3", 1920, 1080, 3, 20)[0] is None  # whole frames fit
    tile, _ = tiling.plan_for_memory(4 * 2**30, "stdf_r3", 2560, 1600, 3, 20)
    assert 8 <= tile < 1600 and tile % 8 == 0
    assert tiling.plan_for_memory(4 * 2**30, "nl_convlstm", 1920, 1080, 3, 20)[0] < tile  # the hungrier model
    # whole 832x480 frames fit 14 GiB by a window's working memory, not with the feature cache's terms kept
    assert tiling.bytes_per_pixel("nl_convlstm") * 832 * 480 < 0.8 * 14 * 2**30 - tiling.process_rss_bytes() - 2**30
    assert tiling.plan_for_memory(14 * 2**30, "nl_convlstm", 832, 480, 3, 20)[0] is not None
    assert tiling.plan_for_memory(2**30, "stdf_r3", 1920, 1080, 3, 20)[0] == 0
    # a small frame that fits whole is never refused for want of room for a tile with its overlap
    monkeypatch.setattr(tiling, "process_rss_bytes", lambda: 600 * 2**20)
    assert tiling.plan_for_memory(2**30, None, 64, 48, 0, 20)[0] is None
    monkeypatch.setattr(tiling, "process_rss_bytes", lambda: 2**30)
    # a recurrent model's hidden states (one per tile, 64 float32 channels) are planned for too
    budget = 4 * 2**30
    stateless, fixed = tiling.plan_for_memory(budget, "rfda", 2560, 1600, 3, 20)
    stateful, _ = tiling.plan_for_memory(budget, "rfda", 2560, 1600, 3, 20, state_channels=64)
    overlap = tiling.default_overlap("rfda")
    held = tiling.states_bytes(1600, 2560, stateful, overlap, 64)
    assert held > 2560 * 1600 * 64 * 4  # one frame's state, a row of new cores and a band
    assert 8 <= stateful < stateless
    assert fixed + held + tiling.BYTES_PER_PIXEL["rfda"] * (stateful + 2 * overlap) ** 2 <= tiling.HEADROOM * budget
    src = str(tmp_path / "in.mp4")
    make_video(src, frames=2, audio=False)
    assert "is too small" in _error(capsys, [src, str(tmp_path / "o.mp4"), "--model_dir", RUN,
                                                        "--max_memory", "1M"])
    assert "give a size" in _error(capsys, [src, str(tmp_path / "o.mp4"), "--model_dir", RUN, "--max_memory", "lots"])
    assert "--tile_overlap must be 0 or more" in _error(capsys, [src, str(tmp_path / "o.mp4"), "--model_dir", RUN,
                                                                 "--tile", "32", "--tile_overlap", "-5"])
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_a_real_clip_keeps_its_frames_and_rate(tmp_path):
    from tests.conftest import shared_file

    src = shared_file("ciscovt2people")  # skips without ../shared
    out = str(tmp_path / "out.mp4")
    assert main([src, out, "--model_dir", RUN, "--no_progress", "--crf", "18"]) == 0
    facts_in, frames_in, _ = decode(src)
    facts_out, frames_out, _ = decode(out)
    assert facts_out["rate"] == facts_in["rate"] and facts_out["size"] == facts_in["size"]
    assert len(frames_out) == len(frames_in) > 1
    assert [float(f[0] * facts_out["time_base"]) for f in frames_out] == \
        pytest.approx([float(f[0] * facts_in["time_base"]) for f in frames_in], abs=1e-3)


@pytest.mark.parametrize("failure, code", [("error", 2), ("interrupt", 130)])
def test_a_model_failure_or_ctrl_c_mid_video_ends_the_command_and_leaves_no_file(tmp_path, monkeypatch, failure, code):
    import threading

    from vcar_tf.errors import VcarError
    from vcar_tf.inference import video

    class Failing(video.StreamingEnhancer):  # as a fixed-size exported model given another size
        def push(self, y):
            raise VcarError("frames must be 1x1x47x65x1") if failure == "error" else KeyboardInterrupt()

    monkeypatch.setattr(video, "StreamingEnhancer", Failing)
    good = str(tmp_path / "good.mp4")
    make_video(good, frames=20, audio=False)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    ended = []

    def run():
        try:
            main([good, str(out_dir / "new" / "deeper" / "o.mp4"), "--model_dir", RUN, "--no_progress"])
        except SystemExit as e:
            ended.append(e.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "vcar-enhance hung after the failure"
    assert ended == [code] and os.listdir(out_dir) == []  # nor the folders made for it; out/ was there


def test_sigterm_mid_video_ends_like_ctrl_c_and_leaves_no_file(tmp_path):
    """`timeout`, `docker stop` or a scheduler send SIGTERM: the command ends with 143 and removes
    its temp file and the folders it made, as for Ctrl-C (the default action would leave them)."""
    import subprocess
    import sys

    good = str(tmp_path / "good.mp4")
    make_video(good, frames=20, audio=False)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    script = (
        "import os, signal, sys, time\n"
        "from vcar_tf.inference import video\n"
        "from vcar_tf.cli.enhance import main\n"
        "def push(self, y):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "video.StreamingEnhancer.push = push\n"
        f"sys.exit(main([{good!r}, {str(out_dir / 'new' / 'o.mp4')!r}, '--model_dir', {RUN!r}, '--no_progress']))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 143 and r.stderr.strip().splitlines()[-1] == "error: terminated (SIGTERM)", r.stderr[-2000:]
    assert os.listdir(out_dir) == []


def test_avi_output_is_written_at_the_frame_rate(tmp_path):
    """AVI declares 1/time base as its frame rate: written in the input's mp4 time base (1/12800)
    it claimed 600 fps and padded 20 frames to 240 with empty ones."""
    from vcar_tf.video.stream import Frame, VideoInput, VideoOutput

    src_path, out = str(tmp_path / "in.mp4"), str(tmp_path / "out.avi")
    make_video(src_path, frames=20, audio=False)
    src = VideoInput(src_path)
    try:
        with VideoOutput(out, src, codec="libx264", options={"qp": "0"}) as dst:
            for item in src.items():
                if isinstance(item, Frame):
                    dst.write(item)
    finally:
        src.close()
    with av.open(out) as c:
        stream = c.streams.video[0]
        assert (stream.average_rate, stream.frames) == (50, 20)
        assert [p.size > 0 for p in c.demux(video=0)][:20] == [True] * 20  # no empty frames between
