import pytest

from memmap.errors import BadInputError, InfeasibleError
from memmap.problem import PRESETS, Problem, Target, format_rate, get_target, parse_rate, parse_size
from tests.helpers import chain_graph


@pytest.mark.parametrize("text,expected", [
    ("4MiB", 4 << 20), ("512KiB", 512 << 10), ("4096", 4096), ("1.5KiB", 1536),
    ("2MB", 2_000_000), ("1 GiB", 1 << 30), ("3k", 3072), (123, 123),
])
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "4XB", "-5", "1.3B", "0", "MiB", "4 Mi B", "0.1"])
def test_parse_size_rejects(text):
    with pytest.raises(BadInputError):
        parse_size(text)


@pytest.mark.parametrize("text", ["4611686018427387905", "5EiB", "100000000TiB", 2**62 + 1, 0])
def test_parse_size_refuses_beyond_2_62(text):
    with pytest.raises(BadInputError):
        parse_size(text)


@pytest.mark.parametrize("text,kind,expected", [
    ("25.6GB/s", "bandwidth", 25.6e9), ("512GiB/s", "bandwidth", 512 * 2.0**30),
    ("1e11", "bandwidth", 1e11), ("100 MB/s", "bandwidth", 1e8), ("1.5kB/s", "bandwidth", 1500.0),
    ("4TFLOP/s", "compute", 4e12), ("4TFLOPS", "compute", 4e12), ("138e12", "compute", 138e12),
    (".5PFLOP/s", "compute", 0.5e15), (7, "compute", 7.0),
])
def test_parse_rate_accepts(text, kind, expected):
    assert parse_rate(text, kind) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text,kind", [
    ("0", "bandwidth"), ("-5GB/s", "bandwidth"), ("inf", "bandwidth"), ("nan", "compute"),
    ("25Gb/s", "bandwidth"), ("4TFLOP/s", "bandwidth"), ("4GB/s", "compute"), ("fast", "compute"),
    ("1e999", "compute"), ("", "bandwidth"), ("4 TB", "bandwidth"), (True, "compute"), (0.0, "compute"),
])
def test_parse_rate_rejects(text, kind):
    with pytest.raises(BadInputError):
        parse_rate(text, kind)


def test_format_rate():
    assert format_rate(25.6e9, "B/s") == "25.6 GB/s"
    assert format_rate(4e12, "FLOP/s") == "4 TFLOP/s"
    assert format_rate(512.0, "B/s") == "512 B/s"


def test_presets_have_sources_and_valid_numbers():
    assert {"npu-4mib", "tpu-cmem-32mib", "fusemax"} <= set(PRESETS)
    assert PRESETS["fusemax"].capacity_bytes == 16 << 20
    assert PRESETS["fusemax"].offchip_bandwidth_bytes_per_s == 400e9
    for t in PRESETS.values():
        assert len(t.source) > 40
    with pytest.raises(BadInputError):
        get_target("nope")


def test_target_validation():
    with pytest.raises(BadInputError):
        Target("x", 1024, alignment_bytes=3)
    with pytest.raises(BadInputError):
        Target("x", 0)


def test_working_sets_and_compulsory():
    g = chain_graph()
    p = Problem(g, Target("t", 1000, alignment_bytes=64), "strict")
    # op a: x(100->128) + y0(200->256) ; op b: y0 256 + w 320 + y1 128
    assert p.working_set_bytes == (384, 704)
    assert p.m_r_bytes == 704
    assert p.compulsory_bytes == 100 + 300 + 100
    pa = Problem(g, Target("t", 1000, alignment_bytes=64), "strict", activations_only=True)
    assert pa.working_set_bytes == (256, 384)
    assert pa.compulsory_bytes == 100   # only the output y1


def test_infeasible_names_operator_and_budget():
    g = chain_graph()
    p = Problem(g, Target("t", 500, alignment_bytes=64), "strict")
    err = p.infeasibility()
    assert isinstance(err, InfeasibleError)
    assert "'b'" in str(err) and "704" in str(err) and "500" in str(err)
    assert [c.op_name for c in err.culprits] == ["b"]
    assert Problem(g, Target("t", 500, alignment_bytes=64), "tiered").infeasibility() is None
