import pandas as pd
import pytest

from cnnbench.seedlog import compare, main, read_keras_log, summarize


@pytest.fixture(scope="module")
def seed001(datasets_dir):
    return datasets_dir.parent / "seeds" / "001_ae77fa9c2fa4d891.txt"


def test_reads_both_trainings_of_a_real_seed_log(seed001):
    mnist, cifar = read_keras_log(seed001)  # its MNIST net (20 epochs), then its CIFAR net (50)
    assert list(mnist.epoch) == list(range(20)) and list(cifar.epoch) == list(range(50))
    assert mnist.iloc[-1].test_acc == 0.9942  # the score the seed reports
    assert cifar.iloc[0].tolist() == [0, 1.3742, 0.5014, 1.3988, 0.5484]
    assert cifar.iloc[-1].tolist() == [49, 0.4212, 0.8498, 0.5016, 0.8350]


def test_compare_and_summarize_in_percentage_points():
    seed = pd.DataFrame({"epoch": [0, 1, 2], "train_acc": [0.5, 0.6, 0.7], "test_acc": [0.5, 0.6, 0.7]})
    ours = pd.DataFrame({"epoch": [0, 1, 2], "train_acc": [0.5, 0.7, 0.8], "test_acc": [0.4, 0.62, 0.68],
                         "lr": [0.001] * 3})
    table = compare(seed, ours)
    assert table.test_acc_diff.round(4).tolist() == [-0.1, 0.02, -0.02]
    assert summarize(table, from_epoch=1) == {"epochs": 2, "mean_pp": 0.0, "sd_pp": 2.83, "max_abs_pp": 2.0,
                                              "final_train_gap_pp": 10.0, "final_test_gap_pp": -2.0,
                                              "swing_seed_pp": 10.0, "swing_ours_pp": 14.0}


def test_a_file_without_keras_epochs_is_refused_by_name(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("Epoch 1/50\nno progress lines here\n")
    with pytest.raises(ValueError, match="notes.txt: no Keras epoch lines"):
        read_keras_log(notes)


def test_cli_prints_the_gap_and_draws_the_curves(seed001, tmp_path, capsys):
    curves = tmp_path / "curves.csv"
    seed_cifar = read_keras_log(seed001)[-1]
    seed_cifar.assign(test_acc=seed_cifar.test_acc - 0.01).to_csv(curves, index=False)
    png = tmp_path / "plot.png"
    assert main([str(seed001), str(curves), "--from-epoch", "10", "--plot", str(png)]) == 0
    assert "'epochs': 40, 'mean_pp': -1.0" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
