import pytest

from cnnbench.cli import main
from cnnbench.models import create_model
from cnnbench.summary import summarize

SPATIAL = ("Conv2d", "SeparableConv2d", "MaxPool2d")


def spatial_rows(arch, shape):
    table = summarize(create_model(arch), shape).table
    return table[table["type"].isin(SPATIAL)]


def test_seed003_receptive_fields_and_output_sizes_match_its_annotations():
    rows = spatial_rows("seed003_sep", (3, 32, 32))
    assert rows["receptive_field"].tolist() == [3, 5, 5, 6, 10, 14, 14, 16, 24, 32, 32]
    # the seed's "Output size" comments, HxWxC
    annotated = ["32*32*64", "32*32*128", "32*32*32", "16*16*32", "16*16*128", "16*16*128",
                 "16*16*64", "8*8*64", "8*8*128", "8*8*256", "8*8*10"]
    got = [f"{h}*{w}*{c}" for c, h, w in rows["output_shape"]]
    assert got == annotated


@pytest.mark.parametrize("arch", ["seed001_mnist", "seed002_mnist"])
def test_mnist_seeds_see_the_whole_image_at_their_last_convolution(arch):
    rows = spatial_rows(arch, (1, 28, 28))
    last = rows.iloc[-1]
    assert last["type"] == "Conv2d" and tuple(last["output_shape"])[1:] == (1, 1)
    assert last["receptive_field"] >= 28
    assert rows.iloc[-2]["receptive_field"] < 28  # it is the last conv that gets there


def test_seed001_sep_shapes_follow_its_keras_summary():
    rows = spatial_rows("seed001_sep", (3, 32, 32))
    sizes = [shape[1] for shape in rows["output_shape"]]
    assert sizes == [30, 28, 14, 14, 12, 6, 6, 4, 2, 1]


def test_totals_and_macs():
    s = summarize(create_model("seed001_mnist"), (1, 28, 28))
    assert s.table["params"].sum() == s.trainable == 13_582
    assert s.keras_total == 13_794
    first = s.table.iloc[0]  # conv 1->16 3x3 on 26x26 outputs
    assert first["macs"] == 26 * 26 * 16 * 9


def test_cli_summary_csv_and_markdown(capsys):
    assert main(["summary", "seed003_sep", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "layer,type,output_shape,params,receptive_field,jump,macs"
    assert main(["summary", "seed001_mnist", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| SeparableConv2d" in out and "trainable params: 13,582" in out


def test_cli_summary_table_and_unknown_arch(capsys):
    assert main(["summary", "seed002_mnist"]) == 0
    assert "13,800" in capsys.readouterr().out
    assert main(["summary", "nope"]) == 2
    assert "known models" in capsys.readouterr().err
