"""Archive datasets: image folders load; zip-slip, absolute, symlink and zip-bomb archives are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.archives import check_zip
from app.errors import Unprocessable
from app.sniff import sniff_dataset
from tests.support.archives import image_folder_zip, zip_absolute, zip_bomb, zip_slip, zip_symlink
from worker.engine import DatasetSpec
from worker.engine.data import load_dataset
from worker.engine.errors import EngineError

HOSTILE = {"slip": zip_slip, "absolute": zip_absolute, "symlink": zip_symlink, "bomb": zip_bomb}


def test_image_folder_loads(tmp_path):
    path = image_folder_zip(tmp_path / "pets.zip", per_class=4, root="pets/")
    assert sniff_dataset(path, {}) == "image_folder"
    data = load_dataset(DatasetSpec(path=str(path), format="image_folder"))
    assert data.x.shape == (12, 1, 8, 6) and data.x.dtype == np.float32
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert data.classes == ["cat", "dog", "emu"]
    assert data.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_image_folder_size_and_classes_order(tmp_path):
    path = image_folder_zip(tmp_path / "pets.zip", per_class=2, mode="RGB", size=(10, 7))
    spec = DatasetSpec(path=str(path), format="image_folder", image_size=[4, 5], classes=["emu", "dog", "cat"])
    data = load_dataset(spec)
    assert data.x.shape == (6, 3, 4, 5)
    assert data.classes == ["emu", "dog", "cat"] and data.y.tolist() == [2, 2, 1, 1, 0, 0]


def test_unknown_class_folder_is_refused(tmp_path):
    path = image_folder_zip(tmp_path / "pets.zip", per_class=1)
    with pytest.raises(EngineError, match="not in classes"):
        load_dataset(DatasetSpec(path=str(path), format="image_folder", classes=["cat", "dog"]))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archives_are_refused_at_upload_and_in_the_worker(tmp_path, kind):
    folder = tmp_path / "job"
    folder.mkdir()
    path = HOSTILE[kind](folder / "data.zip")
    with pytest.raises(Unprocessable) as err:
        check_zip(path)
    assert err.value.code == "unsafe_archive" if hasattr(err.value, "code") else True
    with pytest.raises(Unprocessable):
        sniff_dataset(path, {})
    with pytest.raises(EngineError, match="unsafe archive"):
        load_dataset(DatasetSpec(path=str(path), format="image_folder"))
    # Nothing was extracted anywhere: the job folder holds the archive only, nothing escaped.
    assert [p.name for p in folder.iterdir()] == ["data.zip"]
    assert not (tmp_path / "escaped.png").exists() and not Path("/tmp/absolute-escape.png").exists()
