"""Configuration files: the shipped ones load, and every kind of mistake is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import Config, ConfigError, config_from_dict, load_config
from backend.models import build_model

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "backend" / "configs").glob("*.toml"))


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_build_and_round_trip(path: Path) -> None:
    cfg = load_config(path)
    assert path.stem.split("-")[0] == cfg.model.kind  # a config is named after its kind (and stage)
    build_model(cfg.model)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_an_empty_config_is_the_default() -> None:
    assert config_from_dict({}) == Config()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nhiden = 64\n", r"unknown key\(s\) in \[model\]: hiden; known: kind, decoder, hidden"),
        ("[data]\nnoise = 0.01\nquery_point = 5\n", r"unknown key\(s\) in \[data\]: query_point"),
        ("[training]\nlr = 1e-3\n", r"unknown section\(s\): training; known: model, data, train"),
        ("model = 3\n", r"\[model\] must be a table, got int"),
        ('[model]\nhidden = "128"\n', r"\[model\] hidden must be int, got '128'"),
        ("[train]\nbatch_size = 32.5\n", r"\[train\] batch_size must be int, got 32.5"),
        ("[train]\nbatch_size = true\n", r"\[train\] batch_size must be int, got True"),
        ('[train]\nlr = "fast"\n', r"\[train\] lr must be float, got 'fast'"),
        ('[model]\nkind = "mesh"\n', r"model.kind must be one of .*got 'mesh'"),
        ("[model]\nhidden = 0\n", r"model.hidden must be positive, got 0"),
        ("[model]\nc_dim = 0\n", r"a pointcloud model needs c_dim > 0"),
        ("[model]\nz_dim = -1\n", r"model.z_dim and model.c_dim must be >= 0"),
        ('[model]\nkind = "unconditional"\nc_dim = 0\nz_dim = 8\n', r"needs decoder = 'simple'"),
        ("[train]\nbatch_size = 0\n", r"train.batch_size must be at least 1, got 0"),
        ("[train]\nlr = nan\n", r"train.lr must be a finite number, got nan"),
        ("[train]\nlr = -1e-3\n", r"train.lr must be positive"),
        ("[train]\nmax_steps = -5\n", r"train.max_steps must be at least 1"),
        ("[data]\nquery_points = 0\n", r"data.query_points must be at least 1, got 0"),
        ("[data]\nnoise = -0.1\n", r"data.noise must be at least 0.0, got -0.1"),
        ("[data]\nnoise = inf\n", r"data.noise must be a finite number, got inf"),
        ("[data]\nnear_surface_ratio = 1.5\n", r"data.near_surface_ratio must lie in \[0, 1\], got 1.5"),
        ("[data]\nviews = -1\n", r"data.views must be at least 0"),
        ('[data]\nsource = ""\n', r"data.source must be 'procedural' or a folder"),
        ('[model]\nkind = "voxels"\n[data]\nvoxel_res = 16\n', r"data.voxel_res must be 32"),
        (
            '[model]\nkind = "image"\nimage_size = 64\n[data]\nimage_size = 32\n',
            r"data.image_size \(32\) must",
        ),
        (
            '[model]\nkind = "image"\n[data]\nsource = "meshes/"\n',
            r"image models train on procedural data or the original's layout",
        ),
        ('[data]\nclasses = "chairs"\n', r"data.classes must be a list of class folder names"),
        ('[data]\nclasses = ["03001627"]\n', r"data.classes needs data.source to be a dataset in the"),
        ('[model]\nkind = "image"\n[data]\nviews = 0\n', r"an image model needs data.views >= 1"),
        ('[model]\nkind = "views"\nlocal_features = true\n', r'views model trains on .*cameras = "random"'),
        ('[model]\nkind = "views"\n[data]\ncameras = "random"\n', r"a views model reads every view .*"),
        ('[data]\ncameras = "random"\n', r'data.cameras = "random" shoots the views model\'s data'),
        (
            '[data]\ncameras = "any"\n',
            r"data.cameras must be one of fixed, random, outside, front-side, front-side-top, got 'any'",
        ),
        (
            '[data]\ncameras = "front-side"\nviews = 3\n',
            r'data.cameras = "front-side" shoots 2 views: set data.views = 2',
        ),
        ('[data]\naugment = "yes"\n', r"\[data\] augment must be true or false, got 'yes'"),
        ("[model]\nlocal_features = 1\n", r"\[model\] local_features must be true or false, got 1"),
        ("[model]\npixel_stages = 5\n", r"model.pixel_stages must be 1 to 4 \(ResNet-18 stages\), got 5"),
        ("[model]\npixel_stages = 0\n", r"model.pixel_stages must be 1 to 4"),
        ("[model]\npixel_stages = 2\n", r"pixel_stages > 1 needs kind = 'image' or 'views' and local"),
        (
            '[model]\nkind = "image"\npixel_stages = 3\n',
            r"pixel_stages > 1 needs kind = 'image' or 'views' and local_features",
        ),
    ],
)
def test_mistakes_raise_a_config_error_naming_them(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_unreadable_files_raise_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)  # a folder
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[model\nhidden = 3"))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(binary)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nhiden = 64\n", "unknown key(s) in [model]: hiden"),
        (
            '[data]\nsource = "no-such-folder"\n',
            "is neither 'procedural' nor a folder made by prepare-meshes",
        ),
    ],
)
def test_the_train_command_reports_a_bad_config_and_writes_nothing(
    tmp_path: Path, repo_root: Path, text: str, message: str
) -> None:
    config = write(tmp_path, text + '[train]\nout_dir = "out"\n')
    before = sorted(tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "train", str(config), "--data-dir", "data"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(repo_root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(tmp_path.iterdir()) == before
